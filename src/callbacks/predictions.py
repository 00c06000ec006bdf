"""Writes ``predict`` results to ``predictions.csv`` in the run directory, with class names."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """One CSV row per image: index, true class (when known), then the top-k classes and their probabilities."""

    def __init__(self, filename: str = "predictions.csv", top_k: int = 3) -> None:
        """
        Args:
            filename: name of the CSV written into the run directory (``trainer.log_dir``).
            top_k: how many of the most probable classes to write per image.
        """
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.top_k = top_k
        self.path: Path | None = None

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        names = pl_module.class_names
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        probs = torch.cat([b["probs"] for b in batches])
        k = min(self.top_k, probs.shape[1])
        top_probs, top_classes = (t.tolist() for t in probs.topk(k, dim=1))
        targets = torch.cat([b["target"] for b in batches]).tolist() if "target" in batches[0] else None
        self.path = Path(trainer.log_dir or ".") / self.filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            header = ["index"] + (["target"] if targets else [])
            writer.writerow(header + [c for i in range(1, k + 1) for c in (f"top{i}", f"top{i}_prob")])
            for index, (classes, probs) in enumerate(zip(top_classes, top_probs, strict=True)):
                row: list[Any] = [index] + ([names[targets[index]]] if targets else [])
                row += [v for c, p in zip(classes, probs, strict=True) for v in (names[c], f"{p:.4f}")]
                writer.writerow(row)
        print(f"Wrote {len(top_classes)} predictions to {self.path}")
