"""A CSV of the CIFAR-10 JPEG tree trains like the tree itself: the table's rows are shuffled and carry an extra
column, yet the same seed and epochs give the same val accuracy (same splits, same order: the rows are sorted as
the image folder lists its files).

    python -m benchmarks.csv_vs_folder --archive cifar10-jpg.tar.gz [--root /tmp/cifar10] [--epochs 2]

The archive holds ``cifar10-jpg/{train,test}/<class>/*.jpg``; it is extracted to ``--root`` unless already there.
"""

import argparse
import csv
import os
import random
import tarfile
import warnings
from pathlib import Path

from src.train import cli_main

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # we pass args on purpose


def extract(archive: Path, root: Path) -> None:
    if (root / "train").is_dir():
        return
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():  # drop the archive's top folder: root/train/<class>/...
            member.name = "/".join(member.name.split("/")[1:])
            if member.name:
                tar.extract(member, root, filter="data")


def write_csv(root: Path, path: Path, seed: int = 0) -> int:
    """Every image as a row (path relative to ``root``, label, split, an unrelated column), in shuffled order."""
    rows = [(str(p.relative_to(root)), p.parent.name, p.parts[-3], p.stat().st_size) for p in root.glob("*/*/*.jpg")]
    random.Random(seed).shuffle(rows)
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([("path", "label", "split", "bytes"), *rows])
    return len(rows)


def fit(workdir: Path, *data: str, epochs: int) -> float:
    """``val/acc_best`` of a ``configs/cnn.yaml`` fit on ``data`` (RGB, 32x32), run in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    here = Path.cwd()
    os.chdir(workdir)
    try:
        cli = cli_main(
            ["fit", "--config", str(ROOT / "configs" / "cnn.yaml"), *data, "--data.image_size=32",
             "--data.grayscale=false", "--seed_everything=42", f"--trainer.max_epochs={epochs}",
             "--trainer.enable_progress_bar=false"]
        )  # fmt: skip
    finally:
        os.chdir(here)
    return cli.trainer.callback_metrics["val/acc_best"].item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, required=True, help="cifar10-jpg.tar.gz")
    parser.add_argument("--root", type=Path, default=Path("/tmp/cifar10"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/csv_vs_folder"), help="run folders and the CSV")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    extract(args.archive, args.root)
    args.work.mkdir(parents=True, exist_ok=True)
    table = args.work / "cifar10.csv"
    print(f"{write_csv(args.root, table)} rows written to {table} (shuffled, with an extra 'bytes' column)")
    folder = fit(args.work / "folder", "--data", str(ROOT / "configs/data/image_folder.yaml"),
                 f"--data.data_dir={args.root}", epochs=args.epochs)  # fmt: skip
    from_csv = fit(args.work / "csv", "--data", str(ROOT / "configs/data/csv.yaml"), f"--data.csv={table}",
                   f"--data.image_root={args.root}", epochs=args.epochs)  # fmt: skip
    print(f"val/acc_best after {args.epochs} epochs: image folder {folder:.4f}, CSV {from_csv:.4f}, "
          f"difference {abs(folder - from_csv) * 100:.2f} points")  # fmt: skip


if __name__ == "__main__":
    main()
