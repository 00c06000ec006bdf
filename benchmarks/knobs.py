"""What each recipe knob buys on this machine: ``configs/fast.yaml``'s one epoch on Fashion-MNIST (its whole run, batch
128), through the template, with one knob changed at a time; training-epoch time and test accuracy of the result.

    python -m benchmarks.knobs --data-dir DIR

Knobs: channels-last (on in fast.yaml, here also off), ``torch.compile``, ``bf16-mixed`` precision, and Lightning's
``EMAWeightAveraging`` (decay 0.99: the default 0.999 averages over more steps than this 422-step run has).
"""

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.fashion_mnist import ROOT, EpochTimer, _template

#: One knob changed at a time from fast.yaml as committed (the first row).
VARIANTS = {
    "fast.yaml as committed (channels-last on)": [],
    "channels-last off": ["--model.channels_last=false"],
    "+ torch.compile": ["--model.compile=true"],
    "+ precision bf16-mixed": ["--trainer.precision=bf16-mixed"],
    "+ EMAWeightAveraging (decay 0.99)": [
        "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
        "--trainer.callbacks.decay=0.99",
    ],
}


def run(data_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """fast.yaml's run with ``overrides``: seconds of its training epoch, test accuracy of the model it ends with."""
    with tempfile.TemporaryDirectory() as run_dir:
        cli = _template(
            "fast.yaml", data_dir, run_dir, "--data.batch_size=128", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", *overrides,
        )  # fmt: skip
        timer = EpochTimer()
        cli.trainer.callbacks.insert(0, timer)
        cli.trainer.fit(cli.model, cli.datamodule)  # EMA: the average is copied into the model at the end
        cli.trainer.test(cli.model, cli.datamodule, verbose=False)
        return {"seconds": timer.seconds, "test_acc": cli.trainer.callback_metrics["test/acc"].item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="folder holding FashionMNIST/raw/")
    args = parser.parse_args()
    results = {name: run(args.data_dir, overrides) for name, overrides in VARIANTS.items()}
    base = results[next(iter(VARIANTS))]["seconds"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| fast.yaml, 1 epoch of Fashion-MNIST | training epoch | vs committed | test acc |")
    print("|---|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['seconds']:.1f} s | {result['seconds'] / base:.2f}x | {result['test_acc']:.4f} |")


if __name__ == "__main__":
    main()
