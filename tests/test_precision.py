"""``--trainer.precision``: full, mixed and pure bfloat16 train on a CPU (uint8 batches in, the model's dtype out)."""

from pathlib import Path

import pytest
import torch

from src.predict import Predictor


@pytest.mark.parametrize(
    ("precision", "dtype"), [("32", torch.float32), ("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16)]
)
def test_precision_trains_and_predicts(run_cli, precision: str, dtype: torch.dtype) -> None:
    cli = run_cli(
        "fit", "cnn.yaml", f"--trainer.precision={precision}", "--trainer.max_epochs=2",
        "--data.random_crop_padding=1", "--data.random_rotation=5",  # augmentation feeds float32 batches in
    )  # fmt: skip
    assert next(cli.model.parameters()).dtype == dtype
    val_acc = cli.trainer.callback_metrics["val/acc"].item()
    assert val_acc > 0.6, f"{precision}: val/acc {val_acc} (chance is 0.1)"
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    images = cli.datamodule.val_set.tensors[0][:32]  # uint8
    predictor = Predictor.from_checkpoint(last)
    top1 = [p.classes[0] for p in predictor.predict(list(images))]
    labels = [cli.datamodule.class_names[i] for i in cli.datamodule.val_set.tensors[1][:32].tolist()]
    assert sum(a == b for a, b in zip(top1, labels, strict=True)) > 0.6 * 32
