"""What the template costs beyond plain PyTorch, printed as table rows (figures go into README's Benchmarks section).

1. Start-up: a fresh ``python -m src.train fit --config configs/cnn.yaml --data configs/data/fashion_mnist.yaml``
   from process start until its first training step begins, vs a fresh plain script doing the same job by hand
   (``benchmarks/plain_startup.py``); with the template's phases and the import floors of both sides.
2. The default TQDM progress bar: the time inside its hooks during one training epoch, and the epoch with it vs
   without it (the per-epoch template/plain ratios of ``benchmarks.fashion_mnist`` are measured without it).
3. Where a template epoch's time goes beyond the network's own work: the time inside each callback's hooks and
   inside the model's training-metric updates (FC and CNN).

    python -m benchmarks.overhead --data-dir DIR
"""

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lightning import Callback

from benchmarks.fashion_mnist import ROOT, EpochTimer, _template, train_epoch_template
from benchmarks.first_step import MARK

#: The template's start-up phases, as ``benchmarks.first_step.FirstStep`` stamps them, in order.
PHASES = {
    "parsed": "imports, CLI parser, parse, model/data/trainer built",
    "setup": "prepare_data + data setup (idx files read, val split)",
    "fit_start": "optimiser, logger (events file, hparams), config.yaml",
    "sanity_start": "on_fit_start hooks (model summary, TensorBoard layout)",
    "sanity_end": "sanity check (2 val batches)",
    "first_step": "train loader, first batch, its hooks (sample images)",
}


def _stamps(command: list[str]) -> dict[str, float]:
    """Run ``command`` as a fresh process in the project root; seconds from just before it starts to each
    ``MARK phase <time>`` line it prints."""
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    stamps = {phase: float(at) - start for phase, at in re.findall(rf"{MARK} (\w+) ([\d.]+)", done.stdout)}
    if done.returncode or not stamps:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return stamps


def _imported(modules: str) -> list[str]:
    """A command that imports ``modules`` and stamps the moment it is done."""
    return [sys.executable, "-c", f"import time, {modules}; print('{MARK} imported', time.time(), flush=True)"]


def startup(data_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """Seconds from process start to the first training step: the template's CLI vs the plain script, fresh
    processes, alternating which runs first, best of ``repeats``. Also the template's phases (of its best run) and
    the import times of both sides and of Lightning alone (the floor under any Lightning template)."""
    from src.data.torchvision_datasets import FashionMNISTDataModule  # here: only the benchmark process needs it

    dm = FashionMNISTDataModule(data_dir=str(data_dir))
    dm.prepare_data()  # the files the template reads (extracted from the archives once): the plain script reads them
    raw = dm._root() / "FashionMNIST" / "raw"
    plain = [sys.executable, "-m", "benchmarks.plain_startup", str(raw)]
    commands = {
        "plain": lambda run_dir: plain,
        "template": lambda run_dir: [
            sys.executable, "-m", "src.train", "fit", "--config", "configs/cnn.yaml",
            "--data", "configs/data/fashion_mnist.yaml", f"--data.data_dir={data_dir}",
            f"--trainer.logger.init_args.save_dir={run_dir}", "--trainer.callbacks+=benchmarks.first_step.FirstStep",
        ],
        "import_plain": lambda run_dir: _imported("torch, torchvision"),
        "import_lightning": lambda run_dir: _imported("torch, torchvision, lightning"),
        "import_template": lambda run_dir: _imported("src.train"),
    }  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    for repeat in range(repeats):
        order = list(commands) if repeat % 2 == 0 else list(commands)[::-1]
        for name in order:
            with tempfile.TemporaryDirectory() as run_dir:
                runs[name].append(_stamps(commands[name](run_dir)))
    best = {name: min(r["first_step" if "first_step" in r else "imported"] for r in rs) for name, rs in runs.items()}
    fastest = min(runs["template"], key=lambda r: r["first_step"])
    times = [0.0, *(fastest[phase] for phase in PHASES)]
    return {
        "plain_s": best["plain"], "template_s": best["template"], "ratio": best["template"] / best["plain"],
        "import_plain_s": best["import_plain"], "import_lightning_s": best["import_lightning"],
        "import_template_s": best["import_template"],
        "phases_s": {phase: times[i + 1] - times[i] for i, phase in enumerate(PHASES)},
        "plain_runs": [round(r["first_step"], 2) for r in runs["plain"]],
        "template_runs": [round(r["first_step"], 2) for r in runs["template"]], "repeats": repeats,
    }  # fmt: skip


def startup_rows(result: dict[str, Any]) -> list[str]:
    """README table rows for ``startup``'s result: the headline, the import floors, the template's phases."""
    rows = [
        f"| start-up to the first training step, cnn.yaml on Fashion-MNIST (fresh processes) "
        f"| {result['plain_s']:.2f} s | {result['template_s']:.2f} s | **{result['ratio']:.2f}** |",
        f"| imports alone: `torch, torchvision` / `src.train` (`torch, torchvision, lightning`: "
        f"{result['import_lightning_s']:.2f} s) | {result['import_plain_s']:.2f} s "
        f"| {result['import_template_s']:.2f} s | {result['import_template_s'] / result['import_plain_s']:.2f} |",
    ]
    for phase, seconds in result["phases_s"].items():
        rows.append(f"| template start-up phase: {PHASES[phase]} | | {seconds:.2f} s | |")
    return rows


class HookClock:
    """Adds up the wall time spent inside wrapped callables while the epoch runs (``EpochTimer`` started, not yet
    stopped): what a component itself costs, measured inside one run, so the other tenants of a shared machine
    cannot blur a small difference between two runs."""

    def __init__(self, timer: EpochTimer) -> None:
        self.timer, self.seconds = timer, defaultdict(float)

    def wrap(self, owner: object, name: str, label: str) -> None:
        """Replace ``owner.name`` by a timed copy of itself, counted under ``label``."""
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if hasattr(self.timer, "start") and not hasattr(self.timer, "seconds"):  # inside the epoch
                    self.seconds[label] += time.perf_counter() - start

        setattr(owner, name, timed)

    def wrap_hooks(self, callback: Callback, label: str) -> None:
        """Time every ``on_*`` hook of ``callback`` (the instance's, so other runs are untouched)."""
        for name in dir(callback):
            if name.startswith("on_") and callable(getattr(callback, name)):
                self.wrap(callback, name, label)


def epoch_breakdown(config: str, data_dir: Path, progress_bar: bool = False) -> dict[str, Any]:
    """One template epoch of ``configs/<config>`` (as ``per_epoch_ratio`` runs it) with the time spent inside each
    callback's hooks and inside the model's training-metric updates; ``progress_bar`` adds Lightning's TQDM bar."""
    with tempfile.TemporaryDirectory() as run_dir:
        cli = _template(
            config, data_dir, run_dir, "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
            f"--trainer.enable_progress_bar={str(progress_bar).lower()}", "--trainer.enable_model_summary=false",
        )  # fmt: skip
        timer = EpochTimer()
        clock = HookClock(timer)
        for callback in cli.trainer.callbacks:
            clock.wrap_hooks(callback, type(callback).__name__)
        for metric in (cli.model.train_loss, cli.model.train_acc):
            clock.wrap(metric, "update", "training metric updates (ImageClassifier.training_step)")
        cli.trainer.callbacks.insert(0, timer)
        with open(Path(run_dir) / "stdout.txt", "w") as out, contextlib.redirect_stdout(out):  # the bar writes there
            cli.trainer.fit(cli.model, cli.datamodule)
    parts = dict(sorted(clock.seconds.items(), key=lambda item: -item[1]))
    return {"config": config, "epoch_s": timer.seconds, "steps": cli.trainer.global_step, "parts_s": parts}


def breakdown_rows(result: dict[str, Any]) -> list[str]:
    """README table rows for ``epoch_breakdown``'s result: one per component of at least 1 ms."""
    steps, epoch = result["steps"], result["epoch_s"]
    return [
        f"| inside one template epoch of {result['config']} ({epoch:.2f} s): {part} "
        f"| | {seconds:.3f} s ({seconds / steps * 1e6:.0f} us/step on average) | {100 * seconds / epoch:.1f}% |"
        for part, seconds in result["parts_s"].items()
        if seconds >= 0.001
    ]


def progress_bar_cost(config: str, data_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """What Lightning's default TQDM progress bar costs per training epoch of ``configs/<config>``: the time inside
    its hooks (one run, robust), and the epoch with it vs without it (alternating, best of ``repeats``; on a shared
    machine the difference is within the noise). The bar writes to stdout, here redirected into a file."""
    inside = epoch_breakdown(config, data_dir, progress_bar=True)["parts_s"].get("TQDMProgressBar", 0.0)
    runs: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(repeats):
        for bar in (True, False) if repeat % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as run_dir, open(Path(run_dir) / "stdout.txt", "w") as out:
                with contextlib.redirect_stdout(out):
                    side, _ = train_epoch_template(config, data_dir, run_dir, progress_bar=bar)
                runs[bar].append(side.seconds)
    with_bar, without = min(runs[True]), min(runs[False])
    return {
        "config": config, "bar_hooks_s": inside, "with_bar_s": with_bar, "without_bar_s": without,
        "with_bar_runs": runs[True], "without_bar_runs": runs[False],
    }  # fmt: skip


def progress_bar_row(result: dict[str, Any]) -> str:
    """A README table row for ``progress_bar_cost``'s result."""
    return (
        f"| default TQDM progress bar, one training epoch of {result['config']}: without / with (time inside the "
        f"bar's hooks: {result['bar_hooks_s']:.2f} s) | {result['without_bar_s']:.2f} s | {result['with_bar_s']:.2f} s "
        f"| +{result['bar_hooks_s'] / result['without_bar_s'] * 100:.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="folder holding FashionMNIST/raw/")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each side, alternating the order")
    parser.add_argument("--bar-config", default="fc.yaml", help="model config of the progress bar measurement")
    args = parser.parse_args()

    started = startup(args.data_dir, args.repeats)
    bar = progress_bar_cost(args.bar_config, args.data_dir, args.repeats)
    parts = [epoch_breakdown(config, args.data_dir) for config in ("fc.yaml", "cnn.yaml")]

    print(f"best of {args.repeats}, the two sides alternating which runs first")
    print("| measurement | plain | template | ratio |")
    print("|---|---|---|---|")
    for row in startup_rows(started):
        print(row)
    print(progress_bar_row(bar))
    for result in parts:
        for row in breakdown_rows(result):
            print(row)


if __name__ == "__main__":
    main()
