"""Folders of images: both layouts, stratified splits, measured statistics, and clear errors for bad data."""

import shutil
from pathlib import Path

import pytest
import torch
from lightning import Trainer, seed_everything

from src.data.files import ImageFiles
from src.data.image_folder import ImageFolderDataModule
from src.errors import UserError
from src.models.classifier import ImageClassifier
from tests.conftest import CONFIGS
from tests.test_bad_input import run_expecting_error


def test_single_root_is_split_stratified_and_resized(image_folder: Path) -> None:
    dm = ImageFolderDataModule(data_dir=str(image_folder), image_size=16, val_split=0.25, test_split=0.25)
    assert dm.class_names == ["circle", "square", "triangle"] and dm.input_shape == (3, 16, 16)
    dm.setup("fit")
    for split in (dm.train_set, dm.val_set, dm.test_set):
        images, labels = split.tensors
        assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.uint8
        assert torch.bincount(labels, minlength=3).min() > 0  # every class in every split
    assert sum(len(s) for s in (dm.train_set, dm.val_set, dm.test_set)) == 36
    train = dm.train_set.tensors[0]
    assert dm.mean == pytest.approx((train.float() / 255).mean(dim=(0, 2, 3)).tolist(), abs=1e-4)


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


def test_streaming_gives_the_same_images_statistics_and_batches(image_folder: Path) -> None:
    memory = ImageFolderDataModule(data_dir=str(image_folder), image_size=16, in_memory=True)
    stream = ImageFolderDataModule(data_dir=str(image_folder), image_size=16, in_memory=False)
    memory.setup("fit")
    stream.setup("fit")
    assert isinstance(stream.train_set, ImageFiles) and stream.train_dataloader().num_workers >= 1
    assert memory.train_dataloader().num_workers == 0  # in-memory batches are one index: workers only add copies
    assert (stream.mean, stream.std) == (memory.mean, memory.std)  # small folder: the sample is every image
    for a, b in zip(memory.val_dataloader(), stream.val_dataloader(), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def fit_two_epochs(dm: ImageFolderDataModule, tmp_path: Path) -> dict[str, torch.Tensor]:
    seed_everything(7)
    model = ImageClassifier(dm.class_names, dm.input_shape, dm.mean, dm.std)
    trainer = Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, dm)
    return model.state_dict()


def test_streaming_and_in_memory_train_identically(image_folder: Path, tmp_path: Path) -> None:
    kwargs = dict(data_dir=str(image_folder), image_size=16, batch_size=4)
    memory = fit_two_epochs(ImageFolderDataModule(in_memory=True, **kwargs), tmp_path)
    stream = fit_two_epochs(ImageFolderDataModule(in_memory=False, **kwargs), tmp_path)
    seed_everything(7)
    initial = ImageClassifier(["a", "b", "c"], (3, 16, 16)).state_dict()
    assert not torch.equal(memory["net.classifier.2.weight"], initial["net.classifier.2.weight"]), "it trained"
    for name, tensor in memory.items():
        assert torch.equal(tensor, stream[name]), name


def test_auto_streams_when_the_images_would_not_fit(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImageFolderDataModule(data_dir=str(image_folder)).in_memory
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 10}  # a 40 KiB machine: 36 RGB 32x32 images need 108 KiB
    monkeypatch.setattr("os.sysconf", lambda name: pages[name])
    dm = ImageFolderDataModule(data_dir=str(image_folder))
    assert not dm.in_memory
    dm.setup("fit")
    assert isinstance(dm.train_set, ImageFiles)


def test_streaming_names_a_truncated_image_with_a_clean_exit(
    run_cli, capsys, image_folder: Path, tmp_path: Path
) -> None:
    good = next((image_folder / "circle").glob("*.jpg"))
    (image_folder / "circle" / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    err = run_expecting_error(
        run_cli, capsys, "fit", "cnn.yaml", "--data", str(CONFIGS / "data" / "image_folder.yaml"),
        f"--data.data_dir={image_folder}", "--data.in_memory=false", "--data.val_split=0.5", "--trainer.max_epochs=1",
    )  # fmt: skip
    assert "truncated.jpg" in err and "Remove it" in err


def test_statistics_come_from_the_same_capped_sample_in_both_modes(
    image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("src.data.base.STATISTICS_SAMPLE", 10)  # stands in for 5,000 of a large folder
    memory = ImageFolderDataModule(data_dir=str(image_folder), in_memory=True)
    stream = ImageFolderDataModule(data_dir=str(image_folder), in_memory=False)
    assert (memory.mean, memory.std) == (stream.mean, stream.std)
    memory.setup("fit")
    every = (memory.train_set.tensors[0].float() / 255).mean(dim=(0, 2, 3)).tolist()
    assert memory.mean != pytest.approx(every, abs=1e-6), "measured on the sample, not the whole split"
    assert memory.mean == pytest.approx(every, abs=0.1)
