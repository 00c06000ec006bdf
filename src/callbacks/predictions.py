"""Writes ``predict`` results to ``predictions.csv`` and ``predictions.json``, with class names, top-k sorted."""

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from src.distributed import gather_objects
from src.errors import UserError


def check_top_k(top_k: int, class_names: Sequence[str]) -> None:
    """``top_k`` must name between 1 and all of the model's classes."""
    if not 1 <= top_k <= len(class_names):
        raise UserError(
            f"--predictions.top_k {top_k}: the model knows {len(class_names)} classes; use 1..{len(class_names)}."
        )


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


class PredictionWriter(BasePredictionWriter):
    """One row per image: ``path`` (files) or ``index`` and ``target`` (a data module's split), then ``top1``,
    ``top1_prob``, ... ``topK``, ``topK_prob``. Rows from all processes are gathered; rank 0 writes them once."""

    def __init__(self, output_dir: str | None = None, top_k: int = 3) -> None:
        """
        Args:
            output_dir: folder for ``predictions.csv`` and ``predictions.json``; default: the run directory (the
                checkpoint's run when predicting from ``--ckpt_path``).
            top_k: how many of the most probable classes to write per image.
        """
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.top_k = top_k
        self.path: Path | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        check_top_k(self.top_k, pl_module.class_names)

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        indices_per_batch = batch_indices[0] if batch_indices and isinstance(batch_indices[0], list) else batch_indices
        probs = torch.cat([b["probs"] for b in batches]).cpu()
        if batches and "index" in batches[0]:  # files: the dataset says which file each row is
            indices = torch.cat([b["index"] for b in batches]).tolist()
        else:
            indices = [i for batch in indices_per_batch for i in batch] or list(range(len(probs)))
        targets = torch.cat([b["target"] for b in batches]).tolist() if batches and "target" in batches[0] else None
        rows = self._gather(indices, probs, targets)  # every rank: a collective when distributed
        out_dir = Path(self.output_dir) if self.output_dir else Path(trainer.log_dir or ".")  # broadcasts
        if not trainer.is_global_zero:
            return
        self.path = self.write(rows, out_dir, pl_module.class_names, getattr(trainer.datamodule, "paths", None))

    def _gather(self, indices: list[int], probs: torch.Tensor, targets: list[int] | None) -> dict[int, tuple]:
        """``{index: (probs, target)}`` over all processes (a sampler may repeat an index to even out ranks)."""
        part = [
            (i, p, None if targets is None else targets[n]) for n, (i, p) in enumerate(zip(indices, probs, strict=True))
        ]
        part = [row for p in gather_objects(part) for row in p]
        return {i: (p, t) for i, p, t in sorted(part, key=lambda row: row[0])}

    def write(self, rows: dict[int, tuple], out_dir: Path, class_names: Sequence[str],
              paths: Sequence[Path] | None) -> Path:  # fmt: skip
        """``predictions.csv`` and ``predictions.json`` in ``out_dir``; returns the CSV's path."""
        probs = torch.stack([p for p, _ in rows.values()])
        top = top_k_columns(probs, class_names, self.top_k)
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
