"""``python tests/killable_kfold.py FOLD STEP <kfold args>``: ``python -m src.kfold`` whose fold FOLD stalls in its
training step at global step STEP for a SIGKILL: the fold's process writes its pid to ``stalled`` and sleeps."""

import os
import sys
import time
from pathlib import Path

import torch

from src import kfold
from src.models.classifier import ImageClassifier
from src.train import cli_main

if sys.argv[1] == "fit":  # one fold's fit, as src.kfold starts it: `killable_kfold.py fit FOLD STEP <fit args>`
    fold, step, args = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    training_step = ImageClassifier.training_step

    def stalling_step(self: ImageClassifier, batch: tuple, batch_idx: int) -> torch.Tensor:
        if self.global_step == step:
            Path("stalled").write_text(f"{os.getpid()}\n")
            time.sleep(600)
        return training_step(self, batch, batch_idx)

    if f"--data.fold={fold}" in args:
        ImageClassifier.training_step = stalling_step
    cli_main(["fit", *args])
else:
    kfold.FIT = [sys.executable, __file__, "fit", sys.argv[1], sys.argv[2]]
    kfold.main(sys.argv[3:])
