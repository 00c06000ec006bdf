"""Start-up probe, added from the command line: ``--trainer.callbacks+=benchmarks.first_step.FirstStep``.

Prints wall-clock timestamps (``time.time()``) of the phases of a run and ends the process at the first training
step, so a benchmark can time ``python -m src.train fit ...`` exactly as a user runs it, without touching ``src/``.
"""

import os
import time
from typing import Any

from lightning import Callback, LightningModule, Trainer

#: Printed before each timestamp line, so the benchmark finds them among Lightning's own output.
MARK = "FIRST_STEP_PROBE"


def stamp(phase: str) -> None:
    """One ``MARK phase time`` line on stdout, flushed at once (the process may end right after)."""
    print(f"{MARK} {phase} {time.time():.6f}", flush=True)


class FirstStep(Callback):
    """Timestamps when it is built (arguments parsed), at setup, fit start, sanity check, train start and the
    first training batch; there it exits (``os._exit``: no teardown, nothing else timed)."""

    def __init__(self) -> None:
        stamp("parsed")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stamp("setup")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stamp("fit_start")

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stamp("sanity_start")

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stamp("sanity_end")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stamp, then make the module's first ``training_step`` call (after every callback's batch-start hook,
        the Dashboard's sample images included) stamp ``first_step`` and end the process."""
        stamp("train_start")

        def first_step(*args: Any, **kwargs: Any) -> None:
            stamp("first_step")
            os._exit(0)

        pl_module.training_step = first_step  # type: ignore[method-assign]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        stamp("batch_start")
