"""The files an evaluation writes into its run directory: the test report (``test_report.csv``/``.json``, per class
precision, recall, F1, accuracy and support, ``confusion_matrix.csv``/``.png``) and ``predictions.csv``/``.json``.
Imported only by ``test`` and ``predict`` runs (and the notebook)."""

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from src.callbacks.dashboard import confusion_figure


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


def top_k_columns(probs: torch.Tensor, class_names: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """``[{"top1": name, "top1_prob": p, "top2": ...}, ...]``: one dict per row of ``probs``, most probable first."""
    values, classes = probs.float().topk(top_k, dim=1)
    rows = []
    for cs, ps in zip(classes.tolist(), values.tolist(), strict=True):
        row: dict[str, Any] = {}
        for i, (c, p) in enumerate(zip(cs, ps, strict=True), 1):
            row[f"top{i}"], row[f"top{i}_prob"] = class_names[c], p
        rows.append(row)
    return rows


def write_predictions(rows: dict[int, tuple], out_dir: Path, class_names: Sequence[str], top_k: int,
                      paths: Sequence[Path] | None) -> Path:  # fmt: skip
    """``predictions.csv`` and ``.json`` in ``out_dir`` from ``{index: (probs, target)}``; returns the CSV's path."""
    probs = torch.stack([p for p, _ in rows.values()])
    top = top_k_columns(probs, class_names, top_k)
    records = []
    for (index, (_, target)), columns in zip(rows.items(), top, strict=True):
        first = {"path": str(paths[index])} if paths is not None else {"index": index}
        if paths is None and target is not None:
            first["target"] = class_names[target]
        records.append(first | columns)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "predictions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in record.items()})
    (out_dir / "predictions.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"Wrote {len(records)} predictions to {csv_path} and predictions.json")
    return csv_path
