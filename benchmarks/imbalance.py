"""Acceptance 1 of the real-world data issue: Fashion-MNIST's training split with 5 classes cut to 2 % of their images
(stratified, seed 0), tested on the official balanced test set. Three fits of ``configs/cnn.yaml`` side by side:
plain, ``--model.class_weights balanced`` and ``--data.sampler balanced``; test balanced accuracy and macro F1 of
each best checkpoint (chosen by val/balanced_acc). Then the better fix on 2 DDP processes, whose logged best val
metric must equal a one-process ``validate`` of that checkpoint.

    python -m benchmarks.imbalance --fashion-dir DIR [--epochs 4] [--work DIR]
"""

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CUT, KEEP = (5, 6, 7, 8, 9), 0.02  # Sandal, Shirt, Sneaker, Bag, Ankle boot: 120 of 6,000 each
NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_arrays(fashion: Path, work: Path) -> dict[str, int]:
    """``train.npz`` (the cut training split) and ``test.npz`` (the official test set); the training counts."""
    raw = fashion / "raw" if (fashion / "raw").is_dir() else fashion
    images, labels = idx(raw / "train-images-idx3-ubyte.gz"), idx(raw / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [
            (lambda rows: rng.choice(rows, round(KEEP * len(rows)), replace=False) if c in CUT else rows)(
                np.flatnonzero(labels == c)
            )
            for c in range(10)
        ]
    )
    keep.sort()
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "train.npz", images=images[keep], labels=labels[keep], class_names=np.array(NAMES))
    test_images, test_labels = idx(raw / "t10k-images-idx3-ubyte.gz"), idx(raw / "t10k-labels-idx1-ubyte.gz")
    np.savez(work / "test.npz", images=test_images, labels=test_labels, class_names=np.array(NAMES))
    return {NAMES[c]: int((labels[keep] == c).sum()) for c in range(10)}


def fit_and_test(work: Path, name: str, epochs: int, extra: list[str]) -> dict:
    from src.train import cli_main

    data = ["--data", str(ROOT / "configs/data/arrays.yaml"), f"--data.path={work / 'train.npz'}",
            f"--data.test_path={work / 'test.npz'}"]  # fmt: skip
    common = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    monitor = ["--checkpoint.monitor=val/balanced_acc", "--checkpoint.filename=best-{epoch:02d}"]
    logger = [f"--trainer.logger.init_args.save_dir={work / 'logs'}", f"--trainer.logger.init_args.name={name}"]
    start = time.perf_counter()
    fit = cli_main(["fit", "--config", str(ROOT / "configs/cnn.yaml"), *data, *common, *monitor, *logger,
                    f"--trainer.max_epochs={epochs}", *extra])  # fmt: skip
    seconds = time.perf_counter() - start
    best = fit.trainer.checkpoint_callback
    best_path, logged_best = best.best_model_path, float(best.best_model_score)
    if not fit.trainer.is_global_zero:
        sys.exit(0)  # a DDP worker: rank 0 reports
    run = Path(best_path).parent.parent
    cli_main(["test", "--config", str(run / "config.yaml"), *common, "--trainer.devices=1", "--trainer.strategy=auto",
              "--ckpt_path", best_path])  # fmt: skip
    report = json.loads((run / "test_report.json").read_text())
    val = cli_main(["validate", "--config", str(run / "config.yaml"), *common, "--trainer.devices=1",
                    "--trainer.strategy=auto", "--ckpt_path", best_path])  # fmt: skip
    validated = float(val.trainer.callback_metrics["val/balanced_acc"])
    return {"run": name, "fit_s": round(seconds, 1), "test_balanced_acc": report["balanced_accuracy"],
            "test_macro_f1": report["macro_f1"], "test_acc": report["accuracy"], "best_val_balanced_acc": logged_best,
            "validate_val_balanced_acc": validated, "checkpoint": best_path}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-dir", type=Path, required=True, help="folder of Fashion-MNIST's raw .gz files")
    parser.add_argument("--work", type=Path, default=Path("logs/benchmark-imbalance"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", choices=["plain", "weights", "sampler", "ddp"], action="append")
    parser.add_argument("--ddp-fix", choices=["weights", "sampler"], default="sampler", help="the fix run under DDP")
    args = parser.parse_args()
    worker = os.environ.get("LOCAL_RANK", "0") != "0"  # a DDP worker, started again by Lightning: the files exist
    counts = {} if worker else write_arrays(args.fashion_dir, args.work)
    print(f"training images per class: {counts}")
    runs = {"plain": [], "weights": ["--model.class_weights=balanced"], "sampler": ["--data.sampler=balanced"]}
    ddp = ["--trainer", str(ROOT / "configs/trainer/ddp_cpu.yaml")]
    results = []
    for name in args.only or [*runs, "ddp"]:
        extra = runs[name] if name in runs else [*ddp, *runs[args.ddp_fix]]
        results.append(fit_and_test(args.work, name, args.epochs, extra))
        print(json.dumps(results[-1]))
    print("\nrun      fit s  test balanced acc  test macro F1  test acc  best val bal. acc  validate val bal. acc")
    for r in results:
        scores = [r[k] for k in ("test_balanced_acc", "test_macro_f1", "test_acc", "best_val_balanced_acc")]
        widths = (17, 13, 8, 17)
        cells = "  ".join(f"{v:>{w}.4f}" for v, w in zip(scores, widths, strict=True))
        print(f"{r['run']:<8} {r['fit_s']:>5}  {cells}  {r['validate_val_balanced_acc']:>21.4f}")


if __name__ == "__main__":
    main()
