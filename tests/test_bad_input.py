"""User mistakes: one clear line naming the bad value and its fix, exit 2, no traceback, an earlier run untouched.

The matrix starts every case from a copy of one real training run's ``logs/`` and checks, after the failing
command, that each earlier file is byte-identical and that nothing was added inside that run; a mistake caught
before training starts must leave ``logs/`` exactly as it was (a diverged run may leave its own new ``version_N``,
without a checkpoint). One case runs again as a real process: the shell's view. Variants raised in the same place
as a matrix case are checked directly on the data modules, which is much faster than building the CLI again.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.arrays import ArrayDataModule
from src.data.files import FilesDataModule
from src.data.image_folder import ImageFolderDataModule
from src.errors import UserError
from src.train import cli_main
from tests.conftest import CONFIGS, FAST, ROOT, write_idx

DATA = CONFIGS / "data"
#: The earlier run, relative to each case's working directory (its ``logs/`` is a copy of the real one).
RUN = Path("logs/cnn/version_0")
CKPT = str(RUN / "checkpoints" / "last.ckpt")


def run_expecting_error(run_cli, capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run the CLI in-process; it must exit 2 with a short stderr and no traceback (used by other test files)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 12, f"expected a short message, got:\n{err}"  # not the ~150 options
    return err


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``logs/`` of one real (tiny) training run on the bundled digits, made once for the whole matrix."""
    root = tmp_path_factory.mktemp("earlier")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        cli = cli_main(
            ["fit", "--config", str(CONFIGS / "cnn.yaml"), *FAST, "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
        )  # fmt: skip
        assert Path(cli.trainer.log_dir).resolve() == (root / RUN).resolve()
    assert {"last.ckpt", "config.yaml", "hparams.yaml"} <= {p.name for p in (root / RUN).rglob("*")}
    return root / "logs"


def snapshot(logs: Path) -> dict[str, str | None]:
    """Every path under ``logs/``: sha256 of each file, ``None`` for each folder."""
    return {
        str(p.relative_to(logs.parent)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        for p in sorted(logs.rglob("*"))
    }


# --- What each case puts in its working directory before the command -----------------------------------------


def save_images(folder: Path, count: int, size: int = 8) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((size, size), 40 * i % 256, dtype=np.uint8)).save(folder / f"{i}.png")


def image_classes(**counts: int) -> Callable[[Path], None]:
    """A single-root image folder ``images/<class>/`` with ``counts[class]`` images per class."""
    return lambda cwd: [save_images(cwd / "images" / name, n) for name, n in counts.items()]


def digit_folders_without_test(cwd: Path) -> None:
    """``digits/train/0..9/`` (the earlier run's classes), no ``test/``."""
    for digit in range(10):
        save_images(cwd / "digits" / "train" / str(digit), 2)


def arrays(**content: np.ndarray) -> Callable[[Path], None]:
    return lambda cwd: np.savez(cwd / "arrays.npz", **content)


LABELS = np.arange(30) % 3
PIXELS = np.arange(30 * 8 * 8).reshape(30, 8, 8) % 256


def fake_fashion(cwd: Path) -> None:
    for prefix, n in (("train", 20), ("t10k", 10)):
        raw = cwd / "fake" / "FashionMNIST" / "raw"
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.zeros(n, 28, 28))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n) % 10)


def truncated_checkpoint(cwd: Path) -> None:
    data = (cwd / CKPT).read_bytes()
    (cwd / RUN / "checkpoints" / "truncated.ckpt").write_bytes(data[: len(data) // 2])


def one_image(cwd: Path) -> None:
    save_images(cwd / "mine", 1)


@dataclass(frozen=True)
class Case:
    """A mistake: the command (subcommand, model config, overrides) and what its one error line must say."""

    id: str
    args: tuple[str, ...]
    value: tuple[str, ...]  # substrings naming the bad value
    fix: tuple[str, ...]  # substrings saying what to do instead
    setup: Callable[[Path], object] | None = None
    parse_time: bool = False  # rejected by the argument parser: its usage and tip lines come before "error:"
    new_run: bool = False  # stopped after training began: a new version_N beside the earlier run is allowed


CASES = [
    Case("unknown_key", ("fit", "cnn.yaml", "--model.hiden_size=3"), ("hiden_size",), ("fit --help",),
         parse_time=True),
    Case("wrong_type", ("fit", "cnn.yaml", "--trainer.max_epochs=many"), ("error: --trainer.max_epochs many",),
         ("expected int",), parse_time=True),
    # Inside a class section jsonargparse explains a mistake as a tree of union alternatives: one line here.
    Case("wrong_type_in_a_class_section", ("fit", "cnn.yaml", "--data.batch_size=many"),
         ("error: --data.batch_size many",), ("expected int",), parse_time=True),
    Case("unknown_option_of_a_class", ("fit", "cnn.yaml", "--model.network.init_args.widht=3"),
         ("error: --model.network.widht",),
         ("not an option of src.models.networks.SimpleCNN", "--model.network.help src.models.networks.SimpleCNN"),
         parse_time=True),
    Case("unknown_class", ("fit", "cnn.yaml", "--model.network=src.models.networks.Foo"),
         ("error: --model.network", "'Foo'"), ("module 'src.models.networks' has no attribute",), parse_time=True),
    Case("not_one_of_the_choices", ("fit", "cnn.yaml", "--model.loss=mse"), ("error: --model.loss mse",),
         ("expected one of 'cross_entropy', 'nll'",), parse_time=True),
    Case("label_smoothing_1.5", ("fit", "fast.yaml", "--model.label_smoothing=1.5"),
         ("--model.label_smoothing 1.5",), ("must be in [0, 1)",)),
    Case("one_cycle_without_run_length", ("fit", "fast.yaml", "--trainer.max_epochs=-1"),
         ("total_steps is empty",), ("--trainer.max_epochs", "--model.scheduler.total_steps")),
    Case("resnet_blocks_not_matching_widths", ("fit", "resnet.yaml", "--model.network.init_args.blocks=[1]"),
         ("blocks [1]", "widths [32, 64, 128]"), ("one entry per stage",)),
    Case("batch_size_0", ("fit", "cnn.yaml", "--data.batch_size=0"), ("--data.batch_size 0",), ("must be >= 1",)),
    Case("val_split_0", ("fit", "cnn.yaml", "--data.val_split=0"), ("--data.val_split 0.0",),
         ("between 0 and 1",)),
    Case("val_split_1.5", ("fit", "cnn.yaml", "--data.val_split=1.5"), ("--data.val_split 1.5",),
         ("between 0 and 1",)),
    Case("num_workers_negative", ("fit", "cnn.yaml", "--data.num_workers=-1"), ("--data.num_workers -1",),
         ("must be >= 0, or auto",)),
    Case("fashion_mnist_missing_offline",
         ("fit", "cnn.yaml", "--data", str(DATA / "fashion_mnist.yaml"), "--data.data_dir=nowhere",
          "--data.download=false"),
         ("data_dir='nowhere'", "download=False"), ("--data.data_dir",)),
    Case("empty_image_folder",
         ("fit", "cnn.yaml", "--data", str(DATA / "image_folder.yaml"), "--data.data_dir=empty"),
         ("'empty' has no class sub-folders",), ("put images in empty/<class>/",),
         setup=lambda cwd: (cwd / "empty").mkdir()),
    Case("class_folder_without_images",
         ("fit", "cnn.yaml", "--data", str(DATA / "image_folder.yaml"), "--data.data_dir=images"),
         ("images/hexagon has no images",), ("add images to it, or remove the folder",),
         setup=lambda cwd: (image_classes(circle=4, square=4)(cwd), (cwd / "images" / "hexagon").mkdir())),
    Case("train_folder_without_test_folder",
         ("test", "cnn.yaml", f"--ckpt_path={CKPT}", "--data", str(DATA / "image_folder.yaml"),
          "--data.data_dir=digits", "--data.grayscale=true", "--data.image_size=8", "--data.val_split=0.5"),
         ("'digits' has train/ but no test/ folder",), ("add digits/test/<class>/", "--data.test_split"),
         setup=digit_folders_without_test),
    Case("class_with_1_image_to_split",
         ("fit", "cnn.yaml", "--data", str(DATA / "image_folder.yaml"), "--data.data_dir=images"),
         ("class 'square' has 1 image(s)", "--data.test_split 0.1"), ("Add images of 'square'",),
         setup=image_classes(circle=6, square=1)),
    Case("class_with_2_images_to_split_three_ways",
         ("fit", "cnn.yaml", "--data", str(DATA / "image_folder.yaml"), "--data.data_dir=images"),
         ("class 'square' has 2 image(s)",), ("at least 3 per class", "Add images of 'square'"),
         setup=image_classes(circle=6, square=2)),
    Case("float_arrays_holding_0_to_255",
         ("fit", "cnn.yaml", "--data", str(DATA / "arrays.yaml"), "--data.path=arrays.npz"),
         ("float32 images have values 0..255",), ("(images / 255)", "uint8"),
         setup=arrays(images=PIXELS.astype(np.float32), labels=LABELS)),
    Case("uint16_arrays",
         ("fit", "cnn.yaml", "--data", str(DATA / "arrays.yaml"), "--data.path=arrays.npz"),
         ("uint16 images have values 0..1919", "outside 0..255"), ("(images / 65535 * 255)", "astype(np.uint8)"),
         setup=arrays(images=np.arange(30 * 8 * 8).reshape(30, 8, 8).astype(np.uint16), labels=LABELS)),
    Case("arrays_of_different_lengths",
         ("fit", "cnn.yaml", "--data", str(DATA / "arrays.yaml"), "--data.path=arrays.npz"),
         ("30 images but 29 labels",), ("one label per image",),
         setup=arrays(images=PIXELS.astype(np.uint8), labels=LABELS[:29])),
    Case("arrays_without_the_images_key",
         ("fit", "cnn.yaml", "--data", str(DATA / "arrays.yaml"), "--data.path=arrays.npz"),
         ("no array 'images'", "'pictures'"), ("--data.images_key",),
         setup=arrays(pictures=PIXELS.astype(np.uint8), labels=LABELS)),
    Case("negative_array_label",
         ("fit", "cnn.yaml", "--data", str(DATA / "arrays.yaml"), "--data.path=arrays.npz"),
         ("label -1 is out of range",), ("labels must be 0..2",),
         setup=arrays(images=PIXELS.astype(np.uint8), labels=np.where(np.arange(30) == 0, -1, LABELS))),
    Case("checkpoint_missing", ("test", "cnn.yaml", "--ckpt_path=logs/nope/best.ckpt"),
         ("checkpoint not found: --ckpt_path logs/nope/best.ckpt",), ("last.ckpt",)),
    Case("checkpoint_path_is_a_directory", ("test", "cnn.yaml", f"--ckpt_path={RUN}"),
         (str(RUN), "is a directory"), ("last.ckpt",)),
    Case("checkpoint_of_random_bytes", ("predict", "cnn.yaml", "--ckpt_path=notes.ckpt"),
         ("--ckpt_path notes.ckpt is not a checkpoint",), ("python -m src.train fit",),
         setup=lambda cwd: (cwd / "notes.ckpt").write_bytes(os.urandom(2048))),
    Case("checkpoint_is_a_plain_state_dict", ("test", "cnn.yaml", "--ckpt_path=weights.pt"),
         ("--ckpt_path weights.pt is not a checkpoint", "no model hyper-parameters"), ("python -m src.train fit",),
         setup=lambda cwd: torch.save({"net.weight": torch.zeros(1)}, cwd / "weights.pt")),
    Case("checkpoint_truncated", ("test", "cnn.yaml", f"--ckpt_path={RUN}/checkpoints/truncated.ckpt"),
         ("truncated.ckpt is not a checkpoint",), ("python -m src.train fit",), setup=truncated_checkpoint),
    Case("checkpoint_of_other_classes",
         ("test", "cnn.yaml", f"--ckpt_path={CKPT}", "--data", str(DATA / "fashion_mnist.yaml"),
          "--data.data_dir=fake"),
         ("trained on classes ['0', '1'", "T-shirt/top"), ("config.yaml",), setup=fake_fashion),
    Case("checkpoint_of_another_class_count",
         ("test", "cnn.yaml", f"--ckpt_path={CKPT}", "--data", str(DATA / "arrays.yaml"), "--data.path=arrays.npz"),
         ("['0', '1'", "['low', 'mid', 'high']"), ("config.yaml",),
         setup=arrays(images=PIXELS.astype(np.uint8), labels=LABELS, class_names=np.array(["low", "mid", "high"]))),
    Case("checkpoint_of_another_network", ("test", "fc.yaml", f"--ckpt_path={CKPT}"),
         ("SimpleCNN", "FullyConnected"), ("config.yaml",)),
    Case("top_k_above_the_class_count", ("predict", "cnn.yaml", f"--ckpt_path={CKPT}", "--predictions.top_k=11"),
         ("--predictions.top_k 11", "10 classes"), ("use 1..10",)),
    Case("top_k_0", ("predict", "cnn.yaml", f"--ckpt_path={CKPT}", "--predictions.top_k=0"),
         ("--predictions.top_k 0",), ("use 1..10",)),
    Case("loss_diverges",
         ("fit", "cnn.yaml", "--model.optimizer.lr=1e8", "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"),  # NaN from the 2nd step on
         ("train/loss",), ("--model.optimizer.lr",), new_run=True),
    Case("logs_folder_is_a_file",
         ("fit", "cnn.yaml", "--trainer.logger.init_args.save_dir=blocker/logs"),
         ("blocker/logs",), ("--trainer.logger.init_args.save_dir",),
         setup=lambda cwd: (cwd / "blocker").write_text("a file where a folder is needed")),
    Case("lr_multiplier_matching_no_layer", ("fit", "cnn.yaml", "--model.lr_multipliers={backbone: 0.1}"),
         ("prefix ['backbone'] matches no parameter",), ("use one of", "features.0")),
    Case("files_without_a_checkpoint",
         ("predict", "cnn.yaml", "--data", str(DATA / "files.yaml"), "--data.path=mine"),
         ("--data configs/data/files.yaml",), ("predict --ckpt_path",), setup=one_image),
]  # fmt: skip
BY_ID = {case.id: case for case in CASES}


def prepare(case: Case, cwd: Path, earlier_run: Path) -> dict[str, str | None]:
    """The earlier run's logs and the case's files in ``cwd``; returns the snapshot to compare with."""
    shutil.copytree(earlier_run, cwd / "logs")
    if case.setup is not None:
        case.setup(cwd)
    return snapshot(cwd / "logs")


def check_failure(
    case: Case, code: object, err: str, cwd: Path, before: dict[str, str | None], in_process: bool = True
) -> None:
    """Exit 2, one ``error:`` line naming the value and the fix, no traceback, the earlier run untouched.

    In-process, stderr holds nothing but that line; a real process also prints Lightning's log lines before it.
    """
    assert code == 2, f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert "../shared" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    said = err if case.parse_time else errors[0]  # the parser's usage and tip lines come before its error line
    for part in case.value + case.fix:
        assert part in said, f"{part!r} not in:\n{said}"
    assert err.strip().splitlines()[-1] == errors[0], f"the message goes on below its error line:\n{err}"
    if in_process and not case.parse_time:  # nothing but that line
        assert err.strip() == errors[0], err

    after = snapshot(cwd / "logs")
    for path, digest in before.items():
        assert after.get(path, "missing") == digest, f"{path} of the earlier run was changed or removed"
    added = sorted(set(after) - set(before))
    assert not [p for p in added if Path(p).is_relative_to(RUN)], f"files added to the earlier run: {added}"
    if case.new_run:  # at most one new run directory beside the earlier one, and no checkpoint of NaN weights
        assert len({Path(p).parts[:3] for p in added}) <= 1, added
        assert not [p for p in added if p.endswith(".ckpt")], added
    else:
        assert not added, f"logs/ gained {added}"


#: Run again as a real process: an error raised deep inside building the data (wrapped by the argument parser's
#: instantiation), after Lightning has logged to stderr. One only: a fresh interpreter costs ~10 s of CPU.
SHELL_CASES = ("class_with_1_image_to_split",)


@pytest.fixture(scope="module")
def shell_runs(earlier_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple]]:
    """``python -m src.train`` for each of ``SHELL_CASES``, started in the background as soon as the earlier run
    exists: a fresh interpreter spends ~10 s importing torch and Lightning, overlapping the in-process matrix."""
    runs = []
    for case in map(BY_ID.get, SHELL_CASES):
        cwd = tmp_path_factory.mktemp(case.id)
        before = prepare(case, cwd, earlier_run)
        subcommand, config, *overrides = case.args
        command = [sys.executable, "-m", "src.train", subcommand, "--config", str(CONFIGS / config), *FAST, *overrides]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        runs.append((case, cwd, before, process))
    yield runs
    for *_, process in runs:  # only still running when the test collecting them did not run
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.usefixtures("shell_runs")  # starts them early
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, earlier_run: Path, run_cli, capsys, tmp_path: Path) -> None:
    before = prepare(case, tmp_path, earlier_run)
    subcommand, config, *overrides = case.args
    with pytest.raises(SystemExit) as exit_info:
        run_cli(subcommand, config, *overrides)
    check_failure(case, exit_info.value.code, capsys.readouterr().err, tmp_path, before)


def npz(cwd: Path, **content: np.ndarray) -> str:
    arrays(**content)(cwd)
    return str(cwd / "arrays.npz")


def folder(cwd: Path) -> str:
    image_classes(circle=4, square=4)(cwd)
    return str(cwd / "images")


#: Variants of the matrix's data mistakes, raised in the same place (a data module's ``__init__`` or its split,
#: while the CLI builds the data, before anything is written): checked directly, in milliseconds, for the same
#: one-line message naming the value and the fix.
DATA_MISTAKES: dict[str, tuple[Callable[[Path], object], tuple[str, ...], tuple[str, ...]]] = {
    "float_arrays_with_nan": (
        lambda cwd: ArrayDataModule(npz(cwd, images=np.where(PIXELS == 7, np.nan, PIXELS / 255), labels=LABELS)),
        ("float64 images hold NaN",), ("np.nan_to_num",)),
    "int32_arrays_above_255": (
        lambda cwd: ArrayDataModule(npz(cwd, images=np.where(PIXELS == 0, 300, PIXELS).astype(np.int32),
                                        labels=LABELS)),
        ("int32 images have values 1..300",), ("(images / 300 * 255)", "astype(np.uint8)")),
    "string_arrays": (
        lambda cwd: ArrayDataModule(npz(cwd, images=PIXELS.astype(str), labels=LABELS)),
        ("images of dtype <U",), ("uint8 (0..255) or floats in [0, 1]",)),
    "empty_arrays": (
        lambda cwd: ArrayDataModule(npz(cwd, images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, int))),
        ("images array is empty",), ("at least one image per class",)),
    "array_label_beyond_the_class_names": (
        lambda cwd: ArrayDataModule(npz(cwd, images=PIXELS.astype(np.uint8), labels=LABELS),
                                    label_names=["low", "high"]),
        ("label 2 is out of range for 2 classes ['low', 'high']",), ("--data.label_names",)),
    "test_split_holding_out_fewer_than_the_classes": (
        lambda cwd: ArrayDataModule(npz(cwd, images=PIXELS.astype(np.uint8), labels=LABELS), test_split=0.05).mean,
        ("--data.test_split 0.05 holds out 2 of 30 images", "3 classes"), ("set --data.test_split between 0.1",)),
    "val_split_keeping_fewer_than_the_classes": (
        lambda cwd: ArrayDataModule(npz(cwd, images=PIXELS.astype(np.uint8), labels=LABELS), val_split=0.95).mean,
        ("--data.val_split 0.95 keeps 1 of 27 images",), ("and 0.88, or add images",)),
    "image_folder_test_split_0": (
        lambda cwd: ImageFolderDataModule(folder(cwd), test_split=0).mean,
        ("--data.test_split 0",), ("between 0 and 1",)),
    "image_size_0": (
        lambda cwd: ImageFolderDataModule(folder(cwd), image_size=0),
        ("--data.image_size 0",), ("must be >= 1",)),
    "files_batch_size_0": (
        lambda cwd: FilesDataModule(folder(cwd), batch_size=0),
        ("--data.batch_size 0",), ("must be >= 1",)),
    "files_num_workers_negative": (
        lambda cwd: FilesDataModule(folder(cwd), num_workers=-1),
        ("--data.num_workers -1",), ("must be >= 0, or auto",)),
}  # fmt: skip


@pytest.mark.parametrize(("build", "value", "fix"), DATA_MISTAKES.values(), ids=DATA_MISTAKES.keys())
def test_more_data_mistakes_are_named_with_their_fix(
    build: Callable[[Path], object], value: tuple[str, ...], fix: tuple[str, ...], tmp_path: Path
) -> None:
    with pytest.raises(UserError) as error:
        build(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "../shared" not in message, message
    for part in value + fix:
        assert part in message, f"{part!r} not in: {message}"


def test_the_shell_sees_one_line_and_exit_2(shell_runs: list[tuple]) -> None:
    """As a real process: exit status 2, one ``error:`` line at the end of stderr, no traceback, nothing written."""
    for case, cwd, before, process in shell_runs:
        _, err = process.communicate(timeout=120)
        check_failure(case, process.returncode, err, cwd, before, in_process=False)


def test_train_folder_without_test_folder_still_trains_but_never_tests(tmp_path: Path) -> None:
    """The refusal is only for test/predict: fitting on ``train/`` (val split off it) works, no test split made."""
    for name in ("circle", "square"):
        save_images(tmp_path / "shapes" / "train" / name, 4)
    dm = ImageFolderDataModule(data_dir=str(tmp_path / "shapes"), val_split=0.5)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), dm.test_set) == (4, 4, None)
    with pytest.raises(UserError, match="has train/ but no test/ folder"):
        dm.setup("test")


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.int32])
def test_integer_arrays_within_0_255_load_like_uint8(tmp_path: Path, dtype: type) -> None:
    """Only values outside 0..255 are refused: wider integer types holding 8-bit pixels load unchanged."""
    for name, pixels in (("wide", PIXELS.astype(dtype)), ("narrow", PIXELS.astype(np.uint8))):
        np.savez(tmp_path / f"{name}.npz", images=pixels, labels=LABELS)
    wide, narrow = (ArrayDataModule(path=str(tmp_path / f"{name}.npz")) for name in ("wide", "narrow"))
    assert wide._images.dtype == torch.uint8 and torch.equal(wide._images, narrow._images)
    assert wide._images.max() == 255
