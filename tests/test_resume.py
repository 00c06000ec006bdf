"""Interrupted runs: resume into the same run directory and end exactly where an uninterrupted run ends."""

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.train import cli_main
from tests.conftest import CONFIGS, FAST, kill_at_stall

BATCHES, EPOCHS = 5, 3
#: Dropout (the CNN's), augmentation and a learning-rate drop at the resume point: every kind of state matters.
RUN = [
    f"--trainer.limit_train_batches={BATCHES}",
    "--trainer.limit_val_batches=2",
    "--data.random_crop_padding=1",
    "--data.random_hflip=true",
    "--data.random_rotation=10",
    "--model.scheduler.init_args.milestones=[2]",
]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: (step, value) per tag, with purged events already dropped by its reader."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def best_score(ckpt: Path) -> float:
    states = torch.load(ckpt, weights_only=True)["callbacks"]
    (state,) = (v for k, v in states.items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc'"))
    return float(state["best_model_score"])


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].numel())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same run, never stopped (trained once for the three tests that compare with it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("uninterrupted"))
        cli = cli_main(["fit", "--config", str(CONFIGS / "cnn.yaml"), *FAST, f"--trainer.max_epochs={EPOCHS}", *RUN])
        return Path(cli.trainer.log_dir).resolve()


def test_resume_continues_the_same_run_and_ends_bit_identical(run_cli, uninterrupted: Path) -> None:
    first = Path(run_cli("fit", "cnn.yaml", "--trainer.max_epochs=2", *RUN).trainer.log_dir)
    config = (first / "config.yaml").read_bytes()
    last = first / "checkpoints" / "last.ckpt"
    resumed = run_cli("fit", "cnn.yaml", f"--trainer.max_epochs={EPOCHS}", *RUN, f"--ckpt_path={last}")

    assert Path(resumed.trainer.log_dir) == first, "a resumed run continues in its own directory"
    assert [p.name for p in first.parent.iterdir()] == [first.name], "and makes no other"
    assert (first / "config.yaml").read_bytes() == config, "the run's config is kept"
    resume_config = yaml.safe_load((first / "resume_config.yaml").read_text())  # the resume's own settings, but
    assert resume_config["trainer"]["max_epochs"] == EPOCHS and resume_config["ckpt_path"] is None  # no checkpoint
    assert resumed.trainer.global_step == EPOCHS * BATCHES
    difference = max_weight_difference(uninterrupted / "checkpoints" / "last.ckpt", last)
    print(f"max |weight difference| resumed vs uninterrupted: {difference}")
    assert difference == 0.0, "RNG, optimiser, scheduler and metric states must all be restored"
    assert scalars(first) == scalars(uninterrupted)  # same steps, same values, no duplicates
    assert best_score(last) == best_score(uninterrupted / "checkpoints" / "last.ckpt")


def test_resume_from_the_command_line_run_config(run_cli, tmp_path: Path) -> None:
    """``--config <run>/config.yaml`` alone is enough to resume (what the README shows)."""
    first = Path(run_cli("fit", "cnn.yaml", "--trainer.max_epochs=1", *RUN).trainer.log_dir)
    resumed = run_cli(
        "fit", first / "config.yaml", "--trainer.max_epochs=2", f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}"
    )
    assert Path(resumed.trainer.log_dir) == first and resumed.trainer.global_step == 2 * BATCHES
    assert [step for step, _ in scalars(first)["val/acc_best"]] == [BATCHES - 1, 2 * BATCHES - 1]


def run_until_killed(workdir: Path, mode: str, step: int) -> None:
    """Start a fit in a fresh process, SIGKILL it at the stall point (see tests/killable.py)."""
    workdir.mkdir()
    config = ["--config", str(CONFIGS / "cnn.yaml"), *FAST, f"--trainer.max_epochs={EPOCHS}", *RUN]
    kill_at_stall("killable.py", [mode, str(step), "fit", *config], workdir)


@pytest.mark.parametrize("mode", ["train", "save"])
def test_killed_run_resumes_to_the_uninterrupted_result(
    run_cli, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """SIGKILL in the middle of epoch 2's training, or halfway through writing its ``last.ckpt``; then resume."""
    killed = tmp_path / f"killed_{mode}"
    run_until_killed(killed, mode, step=BATCHES + 2 if mode == "train" else 2 * BATCHES)
    run_dir = killed / "logs" / "cnn" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == BATCHES, "last.ckpt is epoch 1's, whole"
    if mode == "save":
        assert list(last.parent.glob(".last.ckpt.*.tmp")), "the kill hit the write"

    monkeypatch.chdir(killed)
    resumed = run_cli("fit", "cnn.yaml", f"--trainer.max_epochs={EPOCHS}", *RUN, f"--ckpt_path={last}")

    assert Path(resumed.trainer.log_dir) == run_dir.resolve()
    assert [p.name for p in run_dir.parent.iterdir()] == ["version_0"], "one run directory"
    assert not list(last.parent.glob("*.tmp")), "the half-written file is cleaned up"
    assert torch.load(last, weights_only=True)["global_step"] == EPOCHS * BATCHES
    resumed_scalars, reference = scalars(run_dir), scalars(uninterrupted)
    for tag, points in resumed_scalars.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicated or unordered steps {steps}"
    assert resumed_scalars == reference
    assert best_score(last) == best_score(uninterrupted / "checkpoints" / "last.ckpt")
    assert max_weight_difference(uninterrupted / "checkpoints" / "last.ckpt", last) == 0.0
