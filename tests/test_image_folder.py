"""Folders of images: both layouts, stratified splits, measured statistics, and clear errors for bad data."""

import shutil
from pathlib import Path

import pytest
import torch

from src.data import ImageFolderDataModule
from src.errors import UserError


def test_single_root_is_split_stratified_and_resized(image_folder: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(image_folder), image_size=16, val_split=0.25, test_split=0.25)
    assert dm.class_names == ["circle", "square", "triangle"] and dm.input_shape == (3, 16, 16)
    dm.setup("fit")
    for split in (dm.train_set, dm.val_set, dm.test_set):
        images, labels = split.tensors
        assert images.shape[1:] == (3, 16, 16) and images.min() >= 0.0 and images.max() <= 1.0
        assert torch.bincount(labels, minlength=3).min() > 0  # every class in every split
    assert sum(len(s) for s in (dm.train_set, dm.val_set, dm.test_set)) == 36
    train = dm.train_set.tensors[0]
    assert dm.mean == pytest.approx(train.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)


def test_separate_train_and_test_roots(image_folder: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(image_folder, layout / "train")
    shutil.copytree(image_folder, layout / "test")
    dm = ImageFolderDataModule(data_dir=str(layout), image_size=8, grayscale=True, val_split=0.25)
    dm.setup(None)
    assert dm.input_shape == (1, 8, 8)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 9, 36)


def test_corrupt_image_is_named_or_skipped(image_folder: Path) -> None:
    bad = image_folder / "square" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.jpg.*--data.skip_corrupt true"):
        ImageFolderDataModule(data_dir=str(image_folder)).setup("fit")
    dm = ImageFolderDataModule(data_dir=str(image_folder), skip_corrupt=True)
    with pytest.warns(UserWarning, match="broken.jpg"):
        dm.setup("fit")
    assert sum(len(s) for s in (dm.train_set, dm.val_set, dm.test_set)) == 36


def test_empty_class_folder_and_missing_folder(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "hexagon").mkdir()
    with pytest.raises(UserError, match=r"hexagon has no images"):
        ImageFolderDataModule(data_dir=str(image_folder)).setup("fit")
    with pytest.raises(UserError, match="is not a folder"):
        ImageFolderDataModule(data_dir=str(tmp_path / "nowhere"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(UserError, match="has no class sub-folders"):
        ImageFolderDataModule(data_dir=str(tmp_path / "flat"))
