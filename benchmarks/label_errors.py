"""Acceptance 4 of the k-fold issue: digits with 3 % of the training labels flipped at random (seed 0), 5-fold
cross-validation of ``configs/cnn.yaml``: the mean ± std table, out-of-fold coverage (every training image exactly
once), and how many of the top-N likely label errors (N = the number flipped) are flipped ones (target >= 50 %).

    python -m benchmarks.label_errors [--folds 5] [--fraction 0.03] [--work DIR] [fit flags: --trainer.max_epochs 3]
"""

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def flipped_digits(folder: Path, fraction: float, seed: int = 0) -> list[int]:
    """``train.npz`` (the 1,437 training digits of DigitsDataModule's split, ``fraction`` of their labels moved to a
    random other digit) and ``test.npz`` (its 360 test digits, clean) in ``folder``; the flipped rows, sorted."""
    from src.data.digits import DigitsDataModule

    splits = DigitsDataModule().load_splits()  # the same train/test cut as the default data
    (images, labels), (test_images, test_labels) = (
        (x.squeeze(1).numpy(), y.numpy().copy()) for x, y in (splits["train"], splits["test"])
    )
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), round(fraction * len(labels)), replace=False))
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10  # never the true digit
    np.savez(folder / "train.npz", images=images, labels=labels)
    np.savez(folder / "test.npz", images=test_images, labels=test_labels)
    return flipped.tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fraction", type=float, default=0.03)
    p.add_argument("--work", type=Path, help="folder for the data and logs (default: a temporary one)")
    opts, fit_flags = p.parse_known_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="label_errors_"))
    work.mkdir(parents=True, exist_ok=True)
    flipped = flipped_digits(work, opts.fraction)
    data = ["--data", str(ROOT / "configs/data/arrays.yaml"), "--data.path=train.npz", "--data.test_path=test.npz"]
    command = [
        sys.executable,
        "-m",
        "src.kfold",
        "--config",
        str(ROOT / "configs/cnn.yaml"),
        "--folds",
        str(opts.folds),
    ]
    start = time.monotonic()
    subprocess.run([*command, *data, "--trainer.enable_progress_bar=false", *fit_flags], cwd=work, check=True)
    parent = work / "logs" / "cnn-kfold"
    with open(parent / "oof_predictions.csv", newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    pool = {f"train:{i}" for i in range(len(np.load(work / "train.npz")["labels"]))}
    with open(parent / "label_issues.csv", newline="") as f:
        issues = [row["id"] for row in csv.DictReader(f)]
    top = issues[: len(flipped)]
    hits = len(set(top) & {f"train:{i}" for i in flipped})
    print(f"\n{(parent / 'summary.md').read_text()}")
    coverage = 100 * len(set(ids) & pool) / len(pool)
    print(f"out-of-fold rows: {len(ids)} of {len(pool)} training images, {len(set(ids))} distinct, "
          f"coverage {coverage:.1f} %, exactly once: {sorted(ids) == sorted(pool)}")  # fmt: skip
    print(f"flipped labels: {len(flipped)}; likely label errors found: {len(issues)}; flipped among the top "
          f"{len(flipped)}: {hits} ({100 * hits / len(flipped):.1f} %); recall of all issues: "
          f"{100 * len(set(issues) & {f'train:{i}' for i in flipped}) / len(flipped):.1f} %")  # fmt: skip
    print(f"wall time {time.monotonic() - start:.0f} s; files in {parent}")


if __name__ == "__main__":
    main()
