"""CIFAR-10 through torchvision: local files offline, a verified archive extracted outside data_dir, clear errors."""

import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5

from src.data import torchvision_datasets as data_tv
from src.data.torchvision_datasets import CIFAR10DataModule
from src.errors import UserError
from tests.conftest import CIFAR10_CLASSES


def test_loads_local_batches_with_names_and_pixels_in_order(fake_cifar10: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(fake_cifar10), download=False, val_split=0.2)
    dm.prepare_data()
    dm.setup(None)
    assert dm.class_names == CIFAR10_CLASSES and dm.input_shape == (3, 32, 32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (80, 20, 20)
    with open(fake_cifar10 / CIFAR10.base_folder / "test_batch", "rb") as f:
        raw = pickle.load(f)
    images, labels = dm.test_set.tensors
    assert images.dtype == torch.uint8
    # CIFAR rows are 1024 red, 1024 green, 1024 blue values: (N, 3072) -> (N, 3, 32, 32) without reordering.
    assert torch.equal(images, torch.from_numpy(raw["data"].reshape(-1, 3, 32, 32)))
    assert labels.tolist() == raw["labels"]


def test_verified_archive_is_extracted_into_data_not_beside_it(
    fake_cifar10: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    with tarfile.open(shared / CIFAR10.filename, "w:gz") as tar:
        tar.add(fake_cifar10 / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    monkeypatch.setattr(CIFAR10, "tgz_md5", calculate_md5(str(shared / CIFAR10.filename)))
    monkeypatch.setattr(data_tv, "EXTRACT_DIR", tmp_path / "data")
    dm = CIFAR10DataModule(data_dir=str(shared), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 100
    assert sorted(p.name for p in shared.iterdir()) == [CIFAR10.filename]
    assert (tmp_path / "data" / CIFAR10.base_folder / "data_batch_1").is_file()


def test_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(UserError, match=r"empty.*download=False.*cifar-10-python\.tar\.gz.*--data.data_dir"):
        dm.prepare_data()


def test_failed_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port stands in for "no network", with or without internet on the test machine.
    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "offline"))
    with pytest.raises(UserError, match=r"download failed.*image_folder\.yaml"):
        dm.prepare_data()


def test_corrupted_batch_file_is_not_used(fake_cifar10: Path) -> None:
    batch = fake_cifar10 / CIFAR10.base_folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])  # truncated: its checksum no longer matches
    dm = CIFAR10DataModule(data_dir=str(fake_cifar10), download=False)
    dm.prepare_data()
    with pytest.raises(UserError, match=r"incomplete or corrupted.*Delete them"):
        dm.setup("fit")
