"""The evaluation report ``test`` writes into its run directory and prints, and the matplotlib figures it shares with
the TensorBoard dashboard (a confusion matrix; a grid of captioned images).

``test_report.csv`` / ``.json`` (per class: precision, recall, F1, accuracy, support; overall accuracy and macro
F1), ``confusion_matrix.csv`` and ``confusion_matrix.png``, all from one confusion matrix that torchmetrics
synchronises across processes; files are written by rank 0 only.
"""

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from matplotlib.figure import Figure


def confusion_figure(confusion: torch.Tensor, class_names: Sequence[str], title: str) -> Figure:
    """Counts with true classes as rows and predicted classes as columns, class names on both axes."""
    n = len(class_names)
    side = min(max(4.0, 0.5 * n + 2.5), 20.0)
    fig = Figure(figsize=(side, side * 0.9), dpi=100)  # not pyplot's: no window, no global figure list
    ax = fig.subplots()
    counts = confusion.cpu().long()
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    if n <= 30:  # beyond that, numbers would overlap
        threshold = counts.max().item() / 2
        for i in range(n):
            for j in range(n):
                value = counts[i, j].item()
                color = "white" if value > threshold else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=7)
    fig.tight_layout()
    return fig


def image_grid_figure(images: torch.Tensor, captions: Sequence[str], title: str, columns: int = 8) -> Figure:
    """[0, 1] float images (N, C, H, W), grey or RGB, each with its caption (e.g. class names), in a grid.

    One Axes showing one mosaic of all the images, captions as text: an Axes per image (ticks, spines, a layout
    pass) made the 32 training samples, drawn before the first training step, cost ~1 s; this takes ~0.2 s.
    """
    n = len(images)
    columns = min(columns, n)
    rows = -(-n // columns)
    width, height = 1.6 * columns, 1.9 * rows + 0.4  # inches: a 1.6 x 1.9 cell per image, 0.4 for the title
    pixels = images.detach().float().clamp(0, 1).cpu()
    h, w = pixels.shape[-2:]
    ppi = max(h, w) / 1.45  # mosaic pixels per inch: each image's longer side spans 1.45 inches
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    caption_height = 0.14 * lines + 0.08  # inches above each image
    mosaic = torch.ones(pixels.shape[1], round(height * ppi), round(width * ppi))  # white background
    fig = Figure(figsize=(width, height), dpi=100)  # not pyplot's: no window, no global figure list
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    for i, (image, caption) in enumerate(zip(pixels, captions, strict=False)):
        row, column = divmod(i, columns)
        center, top = 1.6 * column + 0.8, 0.4 + 1.9 * row + caption_height  # inches from the top left
        y, x = round(top * ppi), round(center * ppi - w / 2)
        mosaic[:, y : y + h, x : x + w] = image
        ax.text(center, top - 0.03, caption, ha="center", va="bottom", fontsize=7)
    grey = mosaic.shape[0] == 1
    ax.imshow((mosaic[0] if grey else mosaic.permute(1, 2, 0)).numpy(), cmap="gray", vmin=0, vmax=1,
              extent=(0, width, height, 0), aspect="auto")  # fmt: skip
    ax.set(xlim=(0, width), ylim=(height, 0))
    ax.text(width / 2, 0.22, title, ha="center", va="center", fontsize=9)
    return fig


def classification_report(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1, accuracy (= recall: correct / images of the class) and support from a
    confusion matrix with true classes as rows; a class never predicted has precision 0 (as scikit-learn's)."""
    counts = confusion.double().cpu()
    correct, support, predicted = counts.diag(), counts.sum(1), counts.sum(0)
    precision = torch.where(predicted > 0, correct / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, correct / support.clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    classes = [
        {"class": name, "precision": p, "recall": r, "f1": f, "accuracy": r, "support": int(s)}
        for name, p, r, f, s in zip(
            class_names, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist(), strict=True
        )
    ]
    total = int(support.sum())
    return {
        "classes": classes,
        "accuracy": float(correct.sum() / max(total, 1)),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "support": total,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as the table ``test`` prints (4 decimals, as in the CSV)."""
    width = max(12, *(len(c["class"]) for c in report["classes"]))
    lines = [f"{'class':<{width}}  precision  recall      f1  accuracy  support"]
    for c in report["classes"]:
        lines.append(
            f"{c['class']:<{width}}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  {c['f1']:>6.4f}"
            f"  {c['accuracy']:>8.4f}  {c['support']:>7d}"
        )
    lines.append(
        f"{'macro avg':<{width}}  {report['macro_precision']:>9.4f}  {report['macro_recall']:>6.4f}"
        f"  {report['macro_f1']:>6.4f}  {'':>8}  {report['support']:>7d}"
    )
    lines.append(f"overall accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}")
    return "\n".join(lines)


def write_report(run_dir: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Write the four report files into ``run_dir``; return the report."""
    report = classification_report(confusion, class_names)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "test_report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "accuracy", "support"])
        for c in report["classes"]:
            scores = (f"{c[k]:.4f}" for k in ("precision", "recall", "f1", "accuracy"))
            writer.writerow([c["class"], *scores, c["support"]])
        macro = (report["macro_precision"], report["macro_recall"], report["macro_f1"])
        writer.writerow(["macro avg", *(f"{v:.4f}" for v in macro), "", report["support"]])
        writer.writerow(["overall", "", "", "", f"{report['accuracy']:.4f}", report["support"]])
    (run_dir / "test_report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (run_dir / "confusion_matrix.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, confusion.long().tolist(), strict=True):
            writer.writerow([name, *row])
    figure = confusion_figure(confusion, class_names, f"test: accuracy {report['accuracy']:.4f}")
    figure.savefig(run_dir / "confusion_matrix.png")
    return report


class TestReport(Callback):
    """After ``test``: the report files in the run directory and the per-class table on the console."""

    def __init__(self, enabled: bool = True) -> None:
        """
        Args:
            enabled: write ``test_report.{csv,json}`` and ``confusion_matrix.{csv,png}`` and print the table.
        """
        self.enabled = enabled

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled:
            return
        confusion = pl_module.test_confusion.compute()  # every rank: a synchronising collective
        run_dir = Path(trainer.log_dir or ".")  # every rank: trainer.log_dir broadcasts
        if not trainer.is_global_zero:
            return
        report = write_report(run_dir, confusion, pl_module.class_names)
        print(f"\n{format_report(report)}\nreport: {run_dir / 'test_report.csv'} (and .json, confusion_matrix.*)")
