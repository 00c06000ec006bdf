"""The evaluation report ``test`` writes into its run directory, and prints.

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

from src.callbacks.figures import confusion_figure


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
