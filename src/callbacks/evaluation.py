"""The files ``test`` and ``predict`` write into the run directory, gathered from all processes, written once."""

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from src.callbacks.dashboard import confusion_figure, label_set
from src.distributed import gather_objects
from src.errors import UserError

#: The report's columns after the class name, and their widths in the printed table.
COLUMNS, WIDTHS = ("precision", "recall", "f1", "accuracy", "support"), (9, 6, 6, 8, 7)


def check_top_k(top_k: int, class_names: Sequence[str]) -> None:
    """``top_k`` must name between 1 and all of the model's classes."""
    n = len(class_names)
    if not 1 <= top_k <= n:
        raise UserError(f"--predictions.top_k {top_k}: the model knows {n} classes; use 1..{n}.")


def cell(value: Any, width: int = 0) -> str:
    """A table or CSV cell: floats with 4 decimals."""
    return f"{value:>{width}.4f}" if isinstance(value, float) else f"{value:>{width}}"


def write_csv(path: Path, rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([*map(cell, row)] for row in rows)


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
    balanced = float(recall[support > 0].mean()) if total else 0.0  # over the classes that occur (scikit-learn's)
    accuracy = float(correct.sum() / max(total, 1))
    return {"classes": classes, "accuracy": accuracy, "balanced_accuracy": balanced, **macro, "support": total}


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The header, one row per class and the macro averages: the printed table's and the CSV's rows."""
    macro = [report[f"macro_{k}"] for k in COLUMNS[:3]]
    rows = [[c["class"], *(c[k] for k in COLUMNS)] for c in report["classes"]]
    return [["class", *COLUMNS], *rows, ["macro avg", *macro, "", report["support"]]]


def format_report(report: dict[str, Any]) -> str:
    """The report as the table ``test`` prints (4 decimals, as in the CSV)."""
    width = max(12, *(len(c["class"]) for c in report["classes"]))
    lines = ["  ".join([f"{name:<{width}}", *map(cell, row, WIDTHS)]) for name, *row in table_rows(report)]
    overall = f"overall accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f}"
    return "\n".join([*lines, f"{overall}, macro F1 {report['macro_f1']:.4f}"])


#: The multi-label report's columns after the label's name.
LABEL_COLUMNS = ("precision", "recall", "f1", "ap", "support", "threshold")


def multilabel_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Header, one row per label, then the averages: the printed table's and the CSV's rows."""
    rows = [[label["class"], *(label[k] for k in LABEL_COLUMNS)] for label in result["labels"]]
    averages = [["micro avg", "", "", result["micro_f1"], "", "", ""], ["macro avg", "", "", result["macro_f1"]]]
    return [["label", *LABEL_COLUMNS], *rows, *averages, ["mean AP", "", "", "", result["map"]]]


class PredictionWriter(BasePredictionWriter):
    """One row per image: ``path`` (files) or ``index`` and ``target`` (a data module's split), then ``top1``,
    ``top1_prob``, ... ``topK``, ``topK_prob``. Rows from all processes are gathered; rank 0 writes them once."""

    def __init__(self, output_dir: str | None = None, top_k: int = 3) -> None:
        """
        Args:
            output_dir: folder for ``predictions.csv`` and ``.json``; default: the run (the checkpoint's run).
            top_k: how many of the most probable classes to write per image.
        """
        super().__init__(write_interval="epoch")
        self.output_dir, self.top_k = output_dir, top_k

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        """Rows from all processes, by index (a sampler may repeat an index to even out ranks)."""
        probs = torch.cat([b["probs"] for b in predictions]).float().cpu()
        multilabel = getattr(pl_module, "multilabel", False)
        values, classes = (probs, probs >= pl_module.thresholds.cpu()) if multilabel else probs.topk(self.top_k, dim=1)
        given = {k: torch.cat([b[k] for b in predictions]).tolist() for k in ("index", "target") if k in predictions[0]}
        seen = [i for loader in batch_indices for batch in loader for i in batch] or list(range(len(classes)))
        indices = given.get("index", seen)  # files: the dataset says which file each row is
        targets = given.get("target", [None] * len(values))
        part = zip(indices, targets, classes.tolist(), values.tolist(), strict=True)
        rows = {row[0]: row for rank in gather_objects(list(part)) for row in rank}  # every rank: a collective
        out_dir = Path(self.output_dir) if self.output_dir else Path(trainer.log_dir or ".")  # broadcasts
        if not trainer.is_global_zero:
            return
        names, paths, records = pl_module.class_names, getattr(trainer.datamodule, "paths", None), []
        for index, target, top, probs in (rows[i] for i in sorted(rows)):
            record = {"path": str(paths[index])} if paths is not None else {"index": index}
            if paths is None and target is not None:
                record["target"] = label_set(target, names) if multilabel else names[target]
            if multilabel:  # the labels above their thresholds, then every label's probability
                record["labels"] = label_set(top, names)
                record.update({f"prob_{name}": p for name, p in zip(names, probs, strict=True)})
            else:
                for k, (c, p) in enumerate(zip(top, probs, strict=True), 1):  # most probable first
                    record[f"top{k}"], record[f"top{k}_prob"] = names[c], p
            records.append(record)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(out_dir / "predictions.csv", [list(records[0]), *(r.values() for r in records)])
        (out_dir / "predictions.json").write_text(json.dumps(records, indent=1) + "\n")
        print(f"Wrote {len(records)} predictions to {out_dir / 'predictions.csv'} and predictions.json")


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
        if getattr(pl_module, "multilabel", False):
            return self._multilabel(trainer, pl_module.multilabel_scores(tune=False))  # at the model's thresholds
        confusion = pl_module.confusion.compute()  # every rank: a synchronising collective
        run_dir, names = Path(trainer.log_dir or "."), pl_module.class_names  # every rank: log_dir broadcasts
        if not trainer.is_global_zero:
            return
        report = classification_report(confusion, names)
        run_dir.mkdir(parents=True, exist_ok=True)
        overall = ["overall", "", "", "", f"{report['accuracy']:.4f}", report["support"]]
        write_csv(run_dir / "test_report.csv", [*table_rows(report), overall])
        (run_dir / "test_report.json").write_text(json.dumps(report, indent=2) + "\n")
        matrix = [[name, *row] for name, row in zip(names, confusion.long().tolist(), strict=True)]
        write_csv(run_dir / "confusion_matrix.csv", [["true \\ predicted", *names], *matrix])
        figure = confusion_figure(confusion, names, f"test: accuracy {report['accuracy']:.4f}")
        figure.savefig(run_dir / "confusion_matrix.png")
        print(f"\n{format_report(report)}\nreport: {run_dir / 'test_report.csv'} (and .json, confusion_matrix.*)")

    def _multilabel(self, trainer: Trainer, result: dict[str, Any]) -> None:
        run_dir = Path(trainer.log_dir or ".")  # every rank: log_dir broadcasts
        if not trainer.is_global_zero:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = multilabel_rows(result)
        write_csv(run_dir / "test_report.csv", [*rows, ["exact match", "", "", "", "", "", result["exact_match"]]])
        saved = {k: v for k, v in result.items() if k != "thresholds"}
        (run_dir / "test_report.json").write_text(json.dumps(saved, indent=2) + "\n")
        width = max(12, *(len(label["class"]) for label in result["labels"]))
        table = "\n".join("  ".join([f"{name:<{width}}", *(cell(v, 9) for v in row)]) for name, *row in rows)
        print(f"\n{table}\nexact-match accuracy {result['exact_match']:.4f} (the whole label set right)")
        print(f"report: {run_dir / 'test_report.csv'} (and .json)")
