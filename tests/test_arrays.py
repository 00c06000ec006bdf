"""Arrays from .npz / .h5 files: layouts, names, splits, and clear errors for inconsistent arrays."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from src.data.arrays import ArrayDataModule
from src.errors import UserError


def test_npz_channels_last_with_class_names(array_file: Path) -> None:
    dm = ArrayDataModule(path=str(array_file), val_split=0.2, test_split=0.2)
    assert dm.class_names == ["low", "mid", "high"] and dm.input_shape == (3, 12, 12)
    dm.setup(None)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (38, 10, 12)
    assert all(torch.bincount(s.tensors[1], minlength=3).min() > 0 for s in (dm.train_set, dm.val_set, dm.test_set))
    source = np.load(array_file)
    first = dm.train_set.tensors[0][0]
    assert first.shape == (3, 12, 12) and first.dtype == torch.uint8
    matches = [i for i, img in enumerate(source["images"]) if np.array_equal(img.transpose(2, 0, 1), first)]
    assert len(matches) == 1  # the pixels arrive unchanged, channels first


def test_h5_grey_float_images_with_a_separate_test_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name, n in (("train", 40), ("test", 10)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["x"] = rng.random((n, 8, 8)).astype(np.float32)
            f["y"] = np.arange(n) % 2
    dm = ArrayDataModule(path=str(tmp_path / "train.h5"), test_path=str(tmp_path / "test.h5"), images_key="x",
                         labels_key="y", val_split=0.25)  # fmt: skip
    dm.setup(None)
    assert dm.class_names == ["0", "1"] and dm.input_shape == (1, 8, 8)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 10)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((5, 8, 8)), "labels": np.zeros(4, dtype=int)}, "5 images but 4 labels"),
        ({"images": np.zeros((4, 8, 8)), "labels": np.array([0, 1, 2, -1])}, "label -1 is out of range"),
        ({"images": np.zeros((4, 8, 8)), "labels": np.zeros(4)}, "labels must be integers"),
        ({"pictures": np.zeros((4, 8, 8)), "labels": np.zeros(4, dtype=int)}, "no array 'images'"),
        ({"images": np.zeros((4, 8)), "labels": np.zeros(4, dtype=int)}, r"images of shape \(4, 8\)"),
    ],
)
def test_inconsistent_arrays_are_named(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message):
        ArrayDataModule(path=str(path))


def test_label_beyond_the_given_class_names(array_file: Path) -> None:
    with pytest.raises(UserError, match=r"label 2 is out of range for 2 classes \['a', 'b'\]"):
        ArrayDataModule(path=str(array_file), label_names=["a", "b"])
