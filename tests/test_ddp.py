"""Data-parallel training (Lightning's ``ddp``, two CPU processes over gloo), as a user runs it: a real command.

The ``ddp`` launcher re-runs the command once per extra process, so these tests run it in a subprocess (in-process
it would also leave ``LOCAL_RANK`` behind in the test process's environment).
"""

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from src.data.digits import DigitsDataModule
from tests.conftest import CONFIGS, FAST, ROOT

DDP = ["--trainer", str(CONFIGS / "trainer" / "ddp_cpu.yaml")]


def run_ddp(workdir: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "src.train", "fit", "--config", str(CONFIGS / config), *DDP, *FAST,
               "--trainer.callbacks+=tests.probes.RankProbe", *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]  # the other rank shares this stderr
    assert sorted(p.name for p in (workdir / "probe").glob("*.done")) == ["rank0.done", "rank1.done"]
    return result


def probe(workdir: Path, rank: int, tag: str) -> dict[str, torch.Tensor]:
    return torch.load(workdir / "probe" / f"rank{rank}_{tag}.pt", weights_only=True)


#: Of the 1,797 digits, a 3/4 test split leaves 449: 129 for validation and 320 (5 batches) for training.
SPLITS = {"test_split": 0.75, "val_split": 129 / 449}
#: Offline, 16 px (ResNet-18 downsamples that to 1 px by its third stage); the backbone frozen in epoch 0 only.
TRANSFER = ["--model.network.weights=null", "--model.network.input_size=16", "--finetuning.strategy=freeze_unfreeze",
            "--finetuning.unfreeze_at_epoch=1", *(f"--data.{k}={v}" for k, v in SPLITS.items())]  # fmt: skip


@pytest.fixture(scope="module")
def diverging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A two-process fit whose loss turns NaN, started in the background: its start-up (two interpreters importing
    torch and Lightning) overlaps the transfer run below."""
    workdir = tmp_path_factory.mktemp("diverging")
    command = [sys.executable, "-m", "src.train", "fit", "--config", str(CONFIGS / "cnn.yaml"), *DDP, *FAST,
               "--model.optimizer.lr=1e8", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    yield workdir, process
    if process.poll() is None:  # only when the test reading it did not run
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory: pytest.TempPathFactory, diverging: tuple) -> Path:
    """One two-process fit of transfer.yaml for two whole epochs, which both tests below read (each launch of the two
    processes costs more than this training)."""
    workdir = tmp_path_factory.mktemp("ddp")
    run_ddp(workdir, "transfer.yaml", *TRANSFER, "--trainer.max_epochs=2")
    return workdir


def test_ddp_trains_shards_once_and_reports_the_true_val_accuracy(run_cli, transfer_run: Path) -> None:
    """Two processes: half the steps, one run directory, and a val accuracy that a single process reproduces
    exactly, on a val split of 129 images that does not divide evenly (65 + 64: 2 batches on rank 0, 1 on rank 1)."""
    data = DigitsDataModule(**SPLITS)
    data.setup("fit")
    assert len(data.val_set) == 129
    batches = math.ceil(len(data.train_set) / 64)
    assert batches == 5

    runs = list((transfer_run / "logs" / "transfer").iterdir())
    assert len(runs) == 1, "one run directory for both processes"
    run = runs[0]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 and (run / "config.yaml").is_file()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * math.ceil(batches / 2), "each process takes half the batches"
    assert len(last["callbacks"]["RngState"]["ranks"]) == 2, "both processes' random states are saved"
    for name, value in probe(transfer_run, 0, "epoch1").items():
        assert torch.equal(value, probe(transfer_run, 1, "epoch1")[name]), f"ranks disagree on {name}"

    (state,) = (v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc'"))
    logged_best = float(state["best_model_score"])
    single = run_cli("validate", "transfer.yaml", *TRANSFER, f"--ckpt_path={state['best_model_path']}")
    assert single.trainer.callback_metrics["val/acc"].item() == logged_best


def test_ddp_freeze_unfreeze_keeps_every_rank_s_backbone_identical(transfer_run: Path) -> None:
    """The backbone unfreezes after DDP has wrapped the model: both processes must still train ONE backbone."""
    start, frozen, trained = (probe(transfer_run, 0, tag) for tag in ("start", "epoch0", "epoch1"))
    backbone = [k for k in start if k.startswith("net.backbone.") and start[k].is_floating_point()]
    weights = [k for k in backbone if "running" not in k]
    assert all(torch.equal(start[k], frozen[k]) for k in backbone), "frozen in epoch 0, BatchNorm statistics too"
    assert any(not torch.equal(frozen[k], trained[k]) for k in weights), "the backbone trains from epoch 1"
    other = probe(transfer_run, 1, "epoch1")
    different = [k for k in trained if not torch.equal(trained[k], other[k])]
    assert not different, f"ranks trained different weights: {different[:5]}"


def test_ddp_divergence_stops_every_process_with_one_line(diverging: tuple[Path, subprocess.Popen]) -> None:
    """A NaN loss under DDP: every process stops together (a shared decision, no hang), one error line, exit 2."""
    tmp_path, process = diverging
    _, stderr = process.communicate(timeout=300)
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (
        len(errors) == 1
        and re.search(r"train/loss is (nan|inf)", errors[0])
        and "--model.optimizer.lr 1e+08" in errors[0]
    )
    assert not list(tmp_path.rglob("*.ckpt")), "no checkpoint of NaN weights"
