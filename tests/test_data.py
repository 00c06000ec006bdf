"""Data modules: deterministic splits, train-only shuffling, normalisation, offline Fashion-MNIST."""

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler

from src.data import torchvision_datasets as data_tv
from src.data.digits import DigitsDataModule
from src.data.torchvision_datasets import FashionMNISTDataModule
from src.errors import UserError
from src.models.classifier import ImageClassifier


def test_digits_splits_are_disjoint_complete_and_deterministic() -> None:
    dm = DigitsDataModule(val_split=0.1, test_split=0.2)
    dm.setup("fit")
    dm.setup("test")
    sizes = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert sum(sizes) == 1797
    assert sizes[2] == math.ceil(1797 * 0.2)  # stratified, as scikit-learn rounds: up
    again = DigitsDataModule(val_split=0.1, test_split=0.2)
    again.setup("fit")
    assert torch.equal(dm.val_set.tensors[0], again.val_set.tensors[0])
    images = {
        tuple(img.flatten().tolist()) for split in (dm.train_set, dm.val_set, dm.test_set) for img in split.tensors[0]
    }
    assert len(images) > 1700  # no image sits in two splits (a few digits are pixel-identical in the source)


def test_changing_the_seed_changes_val_but_never_test() -> None:
    a, b = DigitsDataModule(seed=1), DigitsDataModule(seed=2)
    for dm in (a, b):
        dm.setup(None)
    assert not torch.equal(a.val_set.tensors[1], b.val_set.tensors[1])
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0])


def test_only_the_train_loader_shuffles() -> None:
    dm = DigitsDataModule(batch_size=32)
    dm.setup(None)
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        assert isinstance(loader.sampler, SequentialSampler)
    first, again = (next(iter(dm.train_dataloader()))[1] for _ in range(2))
    assert not torch.equal(first, again), "each epoch must reshuffle"
    assert torch.equal(next(iter(dm.val_dataloader()))[1], dm.val_set.tensors[1][:32])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.long


def test_the_model_scales_uint8_images_and_normalises_them_with_the_data_statistics() -> None:
    dm = DigitsDataModule()
    dm.setup("fit")
    images = dm.train_set.tensors[0]
    assert images.dtype == torch.uint8 and images.min() == 0 and images.max() == 255
    model = ImageClassifier(dm.class_names, dm.input_shape, dm.mean, dm.std)
    seen = []
    model.net.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    model.eval()
    with torch.no_grad():
        from_bytes, from_floats = model(images), model(images.float() / 255)
    assert seen[0].dtype == torch.float32
    assert abs(seen[0].mean().item()) < 0.05 and seen[0].std().item() == pytest.approx(1.0, abs=0.05)
    torch.testing.assert_close(from_bytes, from_floats)  # uint8 and [0, 1] floats are the same images


def test_fashion_mnist_loads_raw_files_offline(fake_fashion_mnist: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(fake_fashion_mnist), download=False, val_split=0.25)
    dm.prepare_data()
    dm.setup(None)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (150, 50, 50)
    assert dm.class_names[0] == "T-shirt/top" and dm.class_names[9] == "Ankle boot"
    assert dm.input_shape == (1, 28, 28)


def test_fashion_mnist_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(UserError, match=r"empty.*train-images-idx3-ubyte.gz.*--data.data_dir"):
        dm.prepare_data()


def test_real_fashion_mnist_archives_are_extracted_outside_data_dir(
    shared_datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_tv, "EXTRACT_DIR", tmp_path / "data")
    before = sorted(p.name for p in (shared_datasets / "FashionMNIST" / "raw").iterdir())
    dm = FashionMNISTDataModule(data_dir=str(shared_datasets))
    dm.prepare_data()
    dm.setup(None)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (54000, 6000, 10000)
    assert torch.bincount(dm.test_set.tensors[1]).tolist() == [1000] * 10
    assert sorted(p.name for p in (shared_datasets / "FashionMNIST" / "raw").iterdir()) == before
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_fashion_mnist_failed_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port stands in for "no network", with or without internet on the test machine.
    monkeypatch.setattr(FashionMNISTDataModule.dataset_cls, "mirrors", ["http://127.0.0.1:9/"])
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "offline"))
    with pytest.raises(UserError, match=r"download failed.*Put the four raw files.*--data.data_dir"):
        dm.prepare_data()
