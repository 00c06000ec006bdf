"""``python tests/killable_search.py FIT <search args>``: ``python -m src.search``, stalled in the first training step
of the process's FIT-th fit (0-based) for a SIGKILL: it writes ``stalled`` in the working directory and sleeps."""

import sys
import time
from pathlib import Path

import torch

from src.models.classifier import ImageClassifier
from src.search import main

stall_at, args = int(sys.argv[1]), sys.argv[2:]
fits: list[ImageClassifier] = []
on_fit_start, training_step = ImageClassifier.on_fit_start, ImageClassifier.training_step


def counting_start(self: ImageClassifier) -> None:
    fits.append(self)
    on_fit_start(self)


def stalling_step(self: ImageClassifier, batch: tuple, batch_idx: int) -> torch.Tensor:
    if len(fits) == stall_at + 1:
        Path("stalled").write_text("stalled\n")
        time.sleep(600)
    return training_step(self, batch, batch_idx)


ImageClassifier.on_fit_start, ImageClassifier.training_step = counting_start, stalling_step
main(args)
