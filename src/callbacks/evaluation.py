"""What ``test`` and ``predict`` write: the test report and the prediction files, from all processes, once."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from src.distributed import gather_objects
from src.errors import UserError


def check_top_k(top_k: int, class_names: Sequence[str]) -> None:
    """``top_k`` must name between 1 and all of the model's classes."""
    if not 1 <= top_k <= len(class_names):
        raise UserError(
            f"--predictions.top_k {top_k}: the model knows {len(class_names)} classes; use 1..{len(class_names)}."
        )


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
        self.path: Path | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        check_top_k(self.top_k, pl_module.class_names)

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        """Rows ``{index: (probs, target)}`` from all processes (a sampler may repeat an index to even out ranks)."""
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        indices_per_batch = batch_indices[0] if batch_indices and isinstance(batch_indices[0], list) else batch_indices
        probs = torch.cat([b["probs"] for b in batches]).cpu()
        if batches and "index" in batches[0]:  # files: the dataset says which file each row is
            indices = torch.cat([b["index"] for b in batches]).tolist()
        else:
            indices = [i for batch in indices_per_batch for i in batch] or list(range(len(probs)))
        targets = torch.cat([b["target"] for b in batches]).tolist() if batches and "target" in batches[0] else None
        part = list(zip(indices, probs, targets or [None] * len(indices), strict=True))
        gathered = [row for rank in gather_objects(part) for row in rank]  # every rank: a collective
        rows = {i: (p, t) for i, p, t in sorted(gathered, key=lambda row: row[0])}
        out_dir = Path(self.output_dir) if self.output_dir else Path(trainer.log_dir or ".")  # broadcasts
        if not trainer.is_global_zero:
            return
        from src.reports import write_predictions  # only a predict run writes them

        paths = getattr(trainer.datamodule, "paths", None)
        self.path = write_predictions(rows, out_dir, pl_module.class_names, self.top_k, paths)


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
        from src.reports import format_report, write_report  # only a test run writes them

        report = write_report(run_dir, confusion, pl_module.class_names)
        print(f"\n{format_report(report)}\nreport: {run_dir / 'test_report.csv'} (and .json, confusion_matrix.*)")
