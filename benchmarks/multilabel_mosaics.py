"""Acceptance 2 of the real-world-data issue: a multi-label set from Fashion-MNIST, trained through the CSV data module.
Each 56x56 image is a 2x2 mosaic of 1-4 garments (empty cells black); its labels are the set of classes present,
written as ``"Bag|Coat"`` in a CSV. Fit, test and predict of the best checkpoint, ONNX export: every figure printed.

    python -m benchmarks.multilabel_mosaics --fashion-dir DIR --out /tmp/mosaics [--train 40000 --test 4000]
        [--epochs 8] [--config configs/multilabel.yaml] [fit flags: --data.batch_size 64 ...]

DIR holds the four raw IDX files (``train-images-idx3-ubyte.gz`` ...). Train rows are built from the official
training images, test rows and the 20 held-out predict PNGs from the official test images; all seeded (seed 0).
Fit flags: batch 128 and horizontal flips (a mirrored mosaic has the same label set); later flags win. Figures:
docs/multilabel.md.
"""

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: torchvision's Fashion-MNIST class names, in label order: "T-shirt/top" keeps its slash (only "|" separates).
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PREDICT = 20  # held-out mosaics for `predict`: not in the CSV


def read_idx(folder: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The official ``train`` or ``t10k`` images (N, 28, 28) uint8 and labels (N,) from the raw gzipped IDX files."""
    with gzip.open(folder / f"{kind}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / f"{kind}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def mosaics(
    images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator, p: float = 0.5
) -> tuple[np.ndarray, list[list[str]]]:
    """``n`` mosaics: each cell holds an item with probability ``p``, redrawn until at least one does (1-4 items:
    4/15, 6/15, 4/15, 1/15 at p = 0.5). Items are drawn without replacement while the images last."""
    occupied = rng.random((n, 4)) < p
    while not (rows := occupied.any(1)).all():
        occupied[~rows] = rng.random(((~rows).sum(), 4)) < p
    need = int(occupied.sum())
    order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-need // len(images)))])[:need]
    out, names, k = np.zeros((n, 56, 56), np.uint8), [], 0
    for i in range(n):
        present = set()
        for cell in np.flatnonzero(occupied[i]):
            r, c = divmod(int(cell), 2)
            out[i, 28 * r : 28 * r + 28, 28 * c : 28 * c + 28] = images[order[k]]
            present.add(CLASSES[labels[order[k]]])
            k += 1
        names.append(sorted(present))
    return out, names


def write_set(out: Path, fashion: Path, n_train: int, n_test: int) -> tuple[Path, list[tuple[str, set[str]]]]:
    """PNGs under ``out/images/{train,test,predict}``, ``out/mosaics.csv`` (path,label,split) of train and test, and
    ``out/predict_labels.csv`` of the held-out ones; returns the CSV and the held-out (path, label set) pairs."""
    rng = np.random.default_rng(0)
    (train_x, train_y), (test_x, test_y) = read_idx(fashion, "train"), read_idx(fashion, "t10k")
    sets = {"train": mosaics(train_x, train_y, n_train, rng)}
    test_all, test_names = mosaics(test_x, test_y, n_test + PREDICT, rng)  # one draw: no test item reused
    sets["test"], sets["predict"] = (test_all[:n_test], test_names[:n_test]), (test_all[n_test:], test_names[n_test:])
    rows = {}
    for split, (pixels, names) in sets.items():
        (out / "images" / split).mkdir(parents=True)
        rows[split] = [(f"images/{split}/{i:06d}.png", "|".join(ns)) for i, ns in enumerate(names)]
        for (path, _), image in zip(rows[split], pixels, strict=True):
            Image.fromarray(image, "L").save(out / path)
    table, listed = out / "mosaics.csv", [(*row, split) for split in ("train", "test") for row in rows[split]]
    for path, header, content in ((table, ("path", "label", "split"), listed),
                                  (out / "predict_labels.csv", ("path", "label"), rows["predict"])):  # fmt: skip
        with path.open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *content])
    return table, [(path, set(label.split("|"))) for path, label in rows["predict"]]


def cli(out: Path, *args: str) -> float:
    """``python -m src.train ARGS`` in ``out`` (its logs/ and relative paths); the wall-clock seconds it took."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "src.train", *args], cwd=out, env=env, check=True)
    return time.monotonic() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fashion-dir", type=Path, required=True, help="folder of the four raw Fashion-MNIST IDX .gz files")
    p.add_argument("--out", type=Path, required=True, help="new or empty folder: images, CSV, logs, export")
    p.add_argument("--train", type=int, default=40000, help="training mosaics (val is cut from them: 10 %%)")
    p.add_argument("--test", type=int, default=4000, help="test mosaics")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--config", default="configs/multilabel.yaml", help="model config, relative to the repository")
    opts, fit_flags = p.parse_known_args()
    missing = [k for k in ("train", "t10k") if not (opts.fashion_dir / f"{k}-images-idx3-ubyte.gz").is_file()]
    if missing:
        p.error(f"--fashion-dir {opts.fashion_dir}: no {missing[0]}-images-idx3-ubyte.gz (the raw IDX files)")
    if opts.out.exists() and any(opts.out.iterdir()):
        p.error(f"--out {opts.out} is not empty: give a new folder")
    opts.out.mkdir(parents=True, exist_ok=True)
    out = opts.out.resolve()
    table, held_out = write_set(out, opts.fashion_dir.resolve(), opts.train, opts.test)
    print(f"wrote {opts.train} train + {opts.test} test mosaics to {table}, {PREDICT} held out in images/predict")

    name = "multilabel_mosaics"
    fit_seconds = cli(
        out, "fit", "--config", str(ROOT / opts.config), "--data", str(ROOT / "configs/data/csv.yaml"),
        f"--data.csv={table}", "--data.image_size=56", "--data.grayscale=true", f"--trainer.max_epochs={opts.epochs}",
        "--data.batch_size=128", "--data.random_hflip=true", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.name={name}", "--checkpoint.monitor=val/map",
        "--checkpoint.filename=best-epoch{epoch:02d}-map{val/map:.4f}", *fit_flags,
    )  # fmt: skip
    run = max((out / "logs" / name).glob("version_*"), key=lambda d: int(d.name.split("_")[1]))
    (best,) = run.glob("checkpoints/best-*.ckpt")
    cli(out, "test", "--config", str(run / "config.yaml"), f"--ckpt_path={best}")
    report = json.loads((run / "test_report.json").read_text())
    predict_dir = out / "predict_output"
    cli(out, "predict", f"--ckpt_path={best}", "--data", str(ROOT / "configs/data/files.yaml"),
        f"--data.path={out / 'images' / 'predict'}", f"--predictions.output_dir={predict_dir}")  # fmt: skip
    with (predict_dir / "predictions.csv").open(newline="") as f:
        predicted = {Path(row["path"]).name: set(filter(None, row["labels"].split("|"))) for row in csv.DictReader(f)}
    hits = [predicted[Path(path).name] == truth for path, truth in held_out]
    cli(out, "export", f"--ckpt_path={best}", f"--output={out / 'export'}", "--pt2=false")

    from src.predict import Predictor

    images = [str(out / path) for path, _ in held_out] + sorted(map(str, (out / "images" / "test").glob("*.png")))
    checkpoint, onnx = Predictor.from_checkpoint(best, device="cpu"), Predictor.from_onnx(out / "export")
    diff = float((checkpoint.probabilities(images) - onnx.probabilities(images)).abs().max())
    same = sum(a.classes == b.classes for a, b in zip(checkpoint.predict(images), onnx.predict(images), strict=True))

    print(f"\nfit wall time {fit_seconds:.0f} s ({fit_seconds / 60:.1f} min, {opts.epochs} epochs, {os.cpu_count()} "
          f"CPUs); best checkpoint {best.name}")  # fmt: skip
    print(f"test ({report['support']} mosaics): mAP {report['map']:.4f}, micro F1 {report['micro_f1']:.4f}, "
          f"macro F1 {report['macro_f1']:.4f}, exact match {report['exact_match']:.4f}")  # fmt: skip
    print(f"{'label':<12} {'F1':>6} {'AP':>6} {'thresh':>6} {'support':>7}")
    for lab in report["labels"]:
        print(f"{lab['class']:<12} {lab['f1']:.4f} {lab['ap']:.4f} {lab['threshold']:>6.2f} {lab['support']:>7}")
    rate = 100 * sum(hits) / len(hits)
    print(f"predict on {len(hits)} held-out mosaic PNGs: the right label set on {sum(hits)} ({rate:.0f} %)")
    for (path, truth), hit in zip(held_out, hits, strict=True):
        print(f"  {Path(path).name}  true {'|'.join(sorted(truth)):<36} predicted "
              f"{'|'.join(sorted(predicted[Path(path).name])) or '(none)'}{'' if hit else '   <- wrong'}")  # fmt: skip
    print(f"ONNX vs checkpoint on {len(images)} PNGs: max abs probability difference {diff:.2e}, same label sets on "
          f"{same} of {len(images)}")  # fmt: skip
    summary = {"fit_seconds": fit_seconds, "epochs": opts.epochs, "train": opts.train, "test": opts.test,
               "test_report": report, "predict_hits": sum(hits), "predict_total": len(hits), "onnx_max_abs_diff": diff,
               "onnx_same_label_sets": same, "checkpoint": str(best), "fit_flags": fit_flags}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
