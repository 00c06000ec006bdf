"""``python -m src.kfold --config C --folds 5 [fit arguments]`` (docs/kfold.md): k-fold cross-validation. Fold i is an
ordinary ``python -m src.train fit`` run, ``<save_dir>/<name>-kfold/fold_<i>``, validating on fold i; its best
checkpoint then predicts fold i, so every training image is predicted once, by the one model that never trained on it.
From those out-of-fold rows: a mean ± std table, likely label errors, and the folds as one averaged checkpoint.
Rerun after a kill, it continues: finished folds are kept, an interrupted one resumes from its ``last.ckpt``."""

import argparse
import contextlib
import csv
import ctypes
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch

from src.callbacks.dashboard import label_set
from src.checkpoint_io import read_checkpoint
from src.errors import UserError
from src.label_issues import write_label_issues
from src.models.classifier import ImageClassifier, probabilities
from src.models.ensemble import ensemble_checkpoint
from src.models.tasks import class_averages
from src.resume import AtomicCheckpointIO
from src.train import cli_main

#: One fold's training, a process of its own: DDP configs and kills behave as in ``fit`` (tests stall it).
FIT = [sys.executable, "-m", "src.train", "fit"]
ROOT = Path(__file__).resolve().parents[1]
STATE, OOF = "kfold.json", "oof_predictions.csv"
#: Linux: a fold's process gets SIGKILL when the driver dies (``prctl(PR_SET_PDEATHSIG)``), so a rerun never races an
#: orphaned fold. Resolved here, before any fork: the forked child only calls it.
PRCTL = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform.startswith("linux") else None


def parse(argv: list[str]) -> tuple[int, list[str]]:
    epilog = "Every other argument (--config, --trainer.*, --model.*, --data.*) goes to each fold's fit."
    p = argparse.ArgumentParser(prog="python -m src.kfold", epilog=epilog, allow_abbrev=False, exit_on_error=False)
    p.add_argument("--folds", type=int, default=5, help="folds: each trains on the others and validates (5)")
    opts, base = p.parse_known_args(argv)
    base = base[1:] if base[:1] == ["fit"] else base
    if opts.folds < 2:
        raise UserError(f"--folds {opts.folds}: cross-validation needs at least 2 folds, e.g. --folds 5")
    given = {a.split("=", 1)[0] for a in base}
    if "--config" not in given:
        raise UserError("give the training config: --config configs/<model>.yaml, e.g. --config configs/cnn.yaml")
    if taken := sorted(given & {"--data.folds", "--data.fold", "--ckpt_path"}):
        raise UserError(f"{taken[0]}: src.kfold gives each fold its val split (--folds K) and resumes its checkpoints")
    return opts.folds, base


def build(args: list[str]) -> Any:
    """The fit's CLI built quietly (``run=False``: nothing written); a mistake: the CLI's own line, exit 2."""
    err = io.StringIO()
    logging.disable(logging.INFO)  # Lightning's device lines
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cli_main(args, run=False)
    except SystemExit:  # the CLI's error line (not its usage lines), in the words of this command
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")] or [err.getvalue()]
        print("\n".join(lines).replace("--data.folds", "--folds"), file=sys.stderr)
        raise
    finally:
        logging.disable(logging.NOTSET)


def best_checkpoint(run: Path) -> Path:
    """The fold's best checkpoint (as its ``last.ckpt`` records it), else ``last.ckpt``."""
    last = run / "checkpoints" / "last.ckpt"
    states = read_checkpoint(last).get("callbacks", {})
    best = [s.get("best_model_path") for k, s in states.items() if k.startswith("ModelCheckpoint{'monitor': '")]
    found = [run / "checkpoints" / Path(b).name for b in best if b]
    return next((p for p in found if p.is_file()), last)


def train_fold(i: int, folds: int, base: list[str], parent: Path) -> None:
    """Fit fold ``i`` in its run directory: from scratch, or resumed from its ``last.ckpt``."""
    run = parent / f"fold_{i}"
    last = run / "checkpoints" / "last.ckpt"
    if run.exists() and not last.is_file():
        shutil.rmtree(run)  # killed before its first checkpoint: nothing to keep (fit would refuse its config.yaml)
    args = [*base, f"--data.folds={folds}", f"--data.fold={i}", f"--trainer.logger.init_args.name={parent.name}"]
    args += [f"--trainer.logger.init_args.version={run.name}", *([f"--ckpt_path={last}"] if last.is_file() else [])]
    print(f"fold {i} of {folds}: {f'resuming {last}' if last.is_file() else f'training in {run}'}", flush=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # `src` from any directory
    dies_with_driver = partial(PRCTL, 1, signal.SIGKILL) if PRCTL is not None else None
    code = subprocess.run([*FIT, *args], env={**os.environ, "PYTHONPATH": path}, preexec_fn=dies_with_driver).returncode
    if code:
        print(f"error: fold {i} stopped (exit {code}); rerun the same command to continue", file=sys.stderr)
        raise SystemExit(code if code > 0 else 1)


def predict_fold(i: int, run: Path, data: Any) -> None:
    """``fold_<i>/oof_predictions.csv`` (the fold's completion): its val images by its best checkpoint. ``data``: the
    data module of another fold, rebuilt for this one from its init arguments (``_`` keys are the CLI's)."""
    model = ImageClassifier.from_checkpoint(best_checkpoint(run)).to("cuda" if torch.cuda.is_available() else "cpu")
    data = type(data)(**{k: v for k, v in data.hparams.items() if not k.startswith("_")} | {"fold": i})
    data.setup("validate")
    with torch.no_grad():
        probs = torch.cat([probabilities(model(x.to(model.device)), model.task) for x, _ in data.val_dataloader()])
    probs = probs.cpu()
    names, labels = model.class_names, data.split_labels("val")
    if model.multilabel:
        given, predicted = ([label_set(r, names) for r in t] for t in (labels, probs >= model.thresholds.cpu()))
    else:
        given, predicted = ([names[c] for c in t.tolist()] for t in (labels, probs.argmax(1)))
    rows = zip(data.sample_ids("val"), given, predicted, probs.tolist(), strict=True)
    write_csv(run / OOF, [header(names), *([s, y, i, *(f"{p:.9g}" for p in ps), yhat] for s, y, yhat, ps in rows)])


def header(names: list[str]) -> list[str]:
    return ["id", "label", "fold", *(f"prob_{n}" for n in names), "predicted"]


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    """Renamed over its last: a kill leaves the old file or the new one, whole."""
    with (staged := path.with_name(f".{path.name}.partial")).open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    staged.replace(path)


def fold_metrics(probs: torch.Tensor, labels: torch.Tensor, names: list[str], thresholds: Any) -> dict[str, float]:
    """A fold's scores from its out-of-fold rows: accuracy, balanced accuracy and macro F1 (multi-label: exact
    match, mAP and F1 at the fold model's thresholds)."""
    if thresholds is not None:
        from src.models.multilabel import scores

        result = scores(probs, labels, names, thresholds)
        return {k: result[k] for k in ("exact_match", "map", "macro_f1", "micro_f1")}
    k = len(names)
    confusion = torch.bincount(labels * k + probs.argmax(1), minlength=k * k).view(k, k)
    averages = {key.split("/")[1]: float(v) for key, v in class_averages(confusion, "oof").items()}
    return {"acc": float(confusion.diag().sum() / confusion.sum()), **averages}


def finish(parent: Path, folds: int, data: Any) -> str:
    """Every training image's out-of-fold row once (else nothing is written), label issues, the ensemble, and the
    summary (last: a rerun that finds it has nothing to do)."""
    names, multilabel = list(data.class_names), data.multilabel
    rows = []
    for i in range(folds):
        with (parent / f"fold_{i}" / OOF).open(newline="") as f:
            rows += list(csv.reader(f))[1:]
    ids, pool = [r[0] for r in rows], data.sample_ids("train") + data.sample_ids("val")
    if sorted(ids) != sorted(pool):
        missing, repeated = len(set(pool) - set(ids)), len(ids) - len(set(ids))
        raise UserError(
            f"the folds' rows miss {missing} and repeat {repeated} training images (did the data change between "
            "folds?): nothing written; run again with another --trainer.logger.init_args.name"
        )
    write_csv(parent / OOF, [header(names), *rows])
    probs, fold = torch.tensor([[float(p) for p in r[3:-1]] for r in rows]), torch.tensor([int(r[2]) for r in rows])
    if multilabel:
        labels = torch.tensor([[float(n in r[1].split("|")) for n in names] for r in rows])
    else:
        labels = torch.tensor([names.index(r[1]) for r in rows])
        write_label_issues(parent, ids, probs, labels, names, data)
    checkpoints = [read_checkpoint(best_checkpoint(parent / f"fold_{i}")) for i in range(folds)]
    thresholds = [c["state_dict"]["thresholds"] if multilabel else None for c in checkpoints]
    per_fold = [fold_metrics(probs[fold == i], labels[fold == i], names, thresholds[i]) for i in range(folds)]
    if multilabel:  # the ensemble's thresholds: tuned on the only held-out probabilities of every training image
        from src.models.multilabel import tune_thresholds
    ensemble = ensemble_checkpoint(checkpoints, tune_thresholds(probs, labels) if multilabel else None)
    AtomicCheckpointIO().save_checkpoint(ensemble, parent / "checkpoints" / "ensemble.ckpt")
    table = [["metric", "mean", "std", *(f"fold_{i}" for i in range(folds))]]
    for key in per_fold[0]:
        values = torch.tensor([m[key] for m in per_fold], dtype=torch.float64)
        table.append([key, *(f"{v:.4f}" for v in (values.mean(), values.std(), *values))])
    md = [f"| metric | mean ± std | {' | '.join(f'fold {i}' for i in range(folds))} |", "|---" * (folds + 2) + "|"]
    md += [f"| {k} | {m} ± {s} | {' | '.join(v)} |" for k, m, s, *v in table[1:]]
    text = "\n".join(md) + f"\n\n{folds} folds, {len(ids)} out-of-fold images (each once); std over folds (n - 1)\n"
    write_csv(parent / "summary.csv", table)
    (parent / "summary.md").write_text(text)
    return text


def kfold(argv: list[str]) -> Path:
    folds, base = parse(argv)
    cli = build([*base, f"--data.folds={folds}", "--data.fold=0"])
    data = cli.datamodule
    data.split_labels("train")  # a class with fewer images than folds: one line now
    logger = (cli.config.as_dict()["trainer"].get("logger") or {}).get("init_args") or {}
    if not logger.get("save_dir") or not logger.get("name"):
        raise UserError("k-fold needs the config's TensorBoard logger (each fold is a run): do not override it")
    parent, state = Path(logger["save_dir"]) / f"{logger['name']}-kfold", {"folds": folds, "fit_args": base}
    if (parent / STATE).is_file() and (was := json.loads((parent / STATE).read_text())) != state:
        before = " ".join(["--folds", str(was["folds"]), *was["fit_args"]])
        raise UserError(f"{parent} holds a k-fold run of other arguments ({before}): continue it with those, or give "
                        "this one another --trainer.logger.init_args.name")  # fmt: skip
    if (parent / "summary.md").is_file():
        print(f"{parent}: all {folds} folds are done\n\n{(parent / 'summary.md').read_text()}")
        return parent
    parent.mkdir(parents=True, exist_ok=True)
    (parent / STATE).write_text(json.dumps(state, indent=1) + "\n")
    for i in range(folds):
        if not (parent / f"fold_{i}" / OOF).is_file():
            train_fold(i, folds, base, parent)
            predict_fold(i, parent / f"fold_{i}", data)
    print(f"\n{finish(parent, folds, data)}")
    files = ("summary.csv", OOF, "label_issues.csv", "checkpoints/ensemble.ckpt")
    print("\n".join(f"{file}: {parent / file}" for file in files if (parent / file).is_file()))
    return parent


def main(args: list[str] | None = None) -> Path:
    """Run a k-fold cross-validation; user mistakes exit 2 with one line."""
    try:
        return kfold(sys.argv[1:] if args is None else list(args))
    except (UserError, argparse.ArgumentError) as err:  # said in the words of this command
        print(f"error: {err}".replace("--data.folds", "--folds"), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
