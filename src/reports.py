"""The files an evaluation writes into its run directory: ``test_report.csv``/``.json`` (per-class scores),
``confusion_matrix.csv``/``.png`` and ``predictions.csv``/``.json``. Imported only by ``test`` and ``predict``."""

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
    precision, recall = correct / predicted.clamp(min=1), correct / support.clamp(min=1)  # 0 where nothing counted
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    classes = [
        {"class": name, "precision": p, "recall": r, "f1": f, "accuracy": r, "support": int(s)}
        for name, p, r, f, s in zip(class_names, *(t.tolist() for t in (precision, recall, f1, support)), strict=True)
    ]
    total, scores = int(support.sum()), {"f1": f1, "precision": precision, "recall": recall}
    macro = {f"macro_{name}": float(values.mean()) for name, values in scores.items()}
    return {"classes": classes, "accuracy": float(correct.sum() / max(total, 1)), **macro, "support": total}


#: The report's columns after the class name, and their widths in the printed table.
COLUMNS, WIDTHS = ("precision", "recall", "f1", "accuracy", "support"), (9, 6, 6, 8, 7)


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The header, one row per class and the macro averages: the printed table's and the CSV's rows."""
    macro = [report[f"macro_{k}"] for k in COLUMNS[:3]]
    rows = [[c["class"], *(c[k] for k in COLUMNS)] for c in report["classes"]]
    return [["class", *COLUMNS], *rows, ["macro avg", *macro, "", report["support"]]]


def cell(value: Any, width: int = 0) -> str:
    return f"{value:>{width}.4f}" if isinstance(value, float) else f"{value:>{width}}"


def format_report(report: dict[str, Any]) -> str:
    """The report as the table ``test`` prints (4 decimals, as in the CSV)."""
    width = max(12, *(len(c["class"]) for c in report["classes"]))
    lines = ["  ".join([f"{name:<{width}}", *map(cell, row, WIDTHS)]) for name, *row in table_rows(report)]
    return "\n".join([*lines, f"overall accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}"])


def write_report(run_dir: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Write the four report files into ``run_dir``; return the report."""
    report = classification_report(confusion, class_names)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "test_report.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([*map(cell, row)] for row in table_rows(report))
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


def write_predictions(rows: dict[int, tuple], out_dir: Path, class_names: Sequence[str], top_k: int,
                      paths: Sequence[Path] | None) -> Path:  # fmt: skip
    """``predictions.csv`` and ``.json`` in ``out_dir`` from ``{index: (probs, target)}``; returns the CSV's path."""
    values, classes = torch.stack([p for p, _ in rows.values()]).float().topk(top_k, dim=1)
    records = []
    for (index, (_, target)), cs, ps in zip(rows.items(), classes.tolist(), values.tolist(), strict=True):
        record = {"path": str(paths[index])} if paths is not None else {"index": index}
        if paths is None and target is not None:
            record["target"] = class_names[target]
        for i, (c, p) in enumerate(zip(cs, ps, strict=True), 1):  # most probable first
            record[f"top{i}"], record[f"top{i}_prob"] = class_names[c], p
        records.append(record)
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
