"""Predict on your own image files from a checkpoint alone (CLI and Python API), with named, sorted top-k."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from src.data.files import read_image
from src.errors import UserError
from src.models.classifier import ImageClassifier
from src.predict import Predictor
from tests.conftest import CONFIGS
from tests.test_bad_input import run_expecting_error

FILES = str(CONFIGS / "data" / "files.yaml")
MODES = ["L", "RGB", "RGBA", "P", "I;16", "LA"]


@pytest.fixture
def digits_checkpoint(run_cli, tmp_path: Path) -> Path:
    """A CNN trained on digits for 3 epochs (val acc > 0.9), moved out of the project as a user would carry it."""
    cli = run_cli("fit", "cnn.yaml", "--trainer.max_epochs=3")
    run_dir = Path(cli.trainer.log_dir)
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
    return run_dir / "checkpoints" / "last.ckpt"


def write_digit_files(folder: Path, count: int = 12) -> list[int]:
    """Digits as files of mixed sizes (16-80 px), modes (grey, RGB, RGBA, palette, 16-bit, grey+alpha) and
    formats, in nested folders, plus a non-image file; returns the true labels in sorted-path order."""
    digits = load_digits()
    labels = []
    for i in range(count):
        n = len(digits.images) - 1 - i  # from the end: the digits test split comes from a seeded shuffle
        pixels = (digits.images[n] * 255 / 16).round().astype(np.uint8)
        side = 8 * (2 + i % 9)  # 16..80 px: the digit scaled up by whole pixels
        image = Image.fromarray(pixels).resize((side, side), Image.Resampling.NEAREST)
        mode = MODES[i % len(MODES)]
        deep = mode == "I;16"
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257) if deep else image.convert(mode)
        suffix = "jpg" if mode in ("L", "RGB") and i % 2 else "png"
        path = folder / ("nested" if i >= count // 2 else "") / f"{i:02d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        labels.append(int(digits.target[n]))
    (folder / "notes.txt").write_text("not an image")
    return labels


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_predict_on_a_folder_of_mixed_files_without_config_or_data(
    run_cli, digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    labels = write_digit_files(tmp_path / "mine")
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"skipping 1 file\(s\) that are not images: .*notes.txt"):
        run_cli("predict", "", f"--ckpt_path={digits_checkpoint}", "--data", FILES, f"--data.path={tmp_path / 'mine'}")
    run_dir = digits_checkpoint.parent.parent
    rows = read_rows(run_dir / "predictions.csv")  # default output: the checkpoint's run directory
    assert list(rows[0]) == ["path", "top1", "top1_prob", "top2", "top2_prob", "top3", "top3_prob"]
    assert len(rows) == 12
    assert all(Path(r["path"]).is_file() for r in rows) and rows[6]["path"].endswith("nested/06.png")
    for r in rows:
        probs = [float(r[f"top{k}_prob"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and len({r["top1"], r["top2"], r["top3"]}) == 3
    agree = sum(r["top1"] == str(label) for r, label in zip(rows, labels, strict=True))
    assert agree >= 9, f"{agree}/12 top-1 predictions match"  # chance is 1.2/12
    records = json.loads((run_dir / "predictions.json").read_text())
    assert [rec["path"] for rec in records] == [r["path"] for r in rows]
    assert records[0]["top1_prob"] == pytest.approx(float(rows[0]["top1_prob"]), abs=5e-5)
    assert not (tmp_path / "data").exists()  # no training data was needed (or created)


def test_python_api_agrees_with_the_cli_on_files_and_accepts_arrays(
    run_cli, digits_checkpoint: Path, tmp_path: Path
) -> None:
    write_digit_files(tmp_path / "mine")
    out = tmp_path / "out"
    run_cli("predict", "", f"--ckpt_path={digits_checkpoint}", "--data", FILES, f"--data.path={tmp_path / 'mine'}",
            f"--predictions.output_dir={out}", "--predictions.top_k=2")  # fmt: skip
    rows = read_rows(out / "predictions.csv")
    predictor = Predictor.from_checkpoint(digits_checkpoint)
    results = predictor.predict(tmp_path / "mine", top_k=2)
    assert [p.source for p in results] == [r["path"] for r in rows]
    assert [p.classes for p in results] == [[r["top1"], r["top2"]] for r in rows]
    assert [p.probs[0] for p in results] == pytest.approx([float(r["top1_prob"]) for r in rows], abs=1e-4)

    # The same image as a file, a PIL image, an HWC uint8 array, a CHW float tensor: the same probabilities.
    path = tmp_path / "mine" / "01.jpg"
    pil = Image.open(path)
    rgb = np.asarray(pil.convert("RGB"))
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    probs = predictor.probabilities([path, pil, rgb, tensor])
    torch.testing.assert_close(probs[1:], probs[0].expand(3, -1), atol=2e-3, rtol=0)
    assert predictor.predict(np.stack([rgb, rgb]), top_k=1)[1].label == results[1].classes[0]


def test_from_checkpoint_refuses_a_checkpoint_that_would_run_code(tmp_path: Path) -> None:
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"network": Path("x")}}, bad)  # a pickled object
    with pytest.raises(UserError, match=r"evil\.ckpt is not a checkpoint .*UnpicklingError"):  # weights-only load
        ImageClassifier.from_checkpoint(bad)


def test_exif_orientation_and_16_bit_images_are_decoded_right(tmp_path: Path) -> None:
    pixels = np.zeros((4, 6), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left corner
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    upright = read_image(tmp_path / "rotated.jpg", 1, None)
    assert upright.shape == (1, 6, 4)  # width and height swapped
    assert upright[0, 0, -1] > 200  # the corner pixel moved to the top right, as a viewer shows it

    Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert read_image(tmp_path / "deep.png", 3, (5, 5)).unique().tolist() == [255]  # scaled, not clipped


def test_top_k_larger_than_the_classes_is_refused(run_cli, digits_checkpoint: Path, tmp_path, capsys) -> None:
    write_digit_files(tmp_path / "mine", count=2)
    before = sorted(digits_checkpoint.parent.parent.rglob("*"))
    err = run_expecting_error(run_cli, capsys, "predict", "", f"--ckpt_path={digits_checkpoint}", "--data", FILES,
                              f"--data.path={tmp_path / 'mine'}", "--predictions.top_k=11")  # fmt: skip
    assert "--predictions.top_k 11" in err and "10 classes" in err
    assert sorted(digits_checkpoint.parent.parent.rglob("*")) == before


def test_an_unreadable_image_stops_with_its_name(run_cli, digits_checkpoint: Path, tmp_path, capsys) -> None:
    write_digit_files(tmp_path / "mine", count=2)
    (tmp_path / "mine" / "broken.png").write_bytes(b"\x89PNG not really")
    err = run_expecting_error(run_cli, capsys, "predict", "", f"--ckpt_path={digits_checkpoint}", "--data", FILES,
                              f"--data.path={tmp_path / 'mine'}")  # fmt: skip
    assert err.count("\n") == 1 and "cannot read image" in err and "broken.png" in err


def test_files_without_a_checkpoint_or_path_are_refused(run_cli, tmp_path: Path, capsys) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    err = run_expecting_error(run_cli, capsys, "predict", "cnn.yaml", "--data", FILES, "--data.path=a.png")
    assert "predict --ckpt_path" in err
    err = run_expecting_error(run_cli, capsys, "predict", "", "--ckpt_path=nope.ckpt", "--data", FILES)
    assert "checkpoint not found" in err
