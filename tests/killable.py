"""``python tests/killable.py {train,save} STEP <CLI args>``: the CLI, stalled at a chosen moment for a SIGKILL.

``train``: in the training step at global step STEP. ``save``: halfway through writing the ``last.ckpt`` of global
step STEP (the real bytes, then a stall: what a kill mid-write leaves). Either way it writes ``stalled`` in the
working directory and sleeps until killed.
"""

import io
import sys
import time
from pathlib import Path

import torch

from src.models.classifier import ImageClassifier
from src.train import cli_main


def stall() -> None:
    Path("stalled").write_text("stalled\n")
    time.sleep(600)


mode, step, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if mode == "train":
    training_step = ImageClassifier.training_step

    def stalling_step(self: ImageClassifier, batch: tuple, batch_idx: int) -> torch.Tensor:
        if self.global_step == step:
            stall()
        return training_step(self, batch, batch_idx)

    ImageClassifier.training_step = stalling_step
else:
    save = torch.save

    def stalling_save(obj: object, f: object, *a: object, **k: object) -> None:
        name = str(getattr(f, "name", f))
        if ".last.ckpt." in name and isinstance(obj, dict) and obj.get("global_step") == step:
            buffer = io.BytesIO()
            save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # type: ignore[attr-defined]
            f.flush()  # type: ignore[attr-defined]
            stall()
        save(obj, f, *a, **k)

    torch.save = stalling_save
cli_main(args)
