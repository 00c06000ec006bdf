"""Training-only augmentation: a separate random draw per image, exact pixels, never on evaluation batches."""

import pytest
import torch
import torch.nn.functional as F
from lightning import Callback, Trainer
from torchvision.transforms import v2

from src.data.augment import BatchAugment
from src.data.digits import DigitsDataModule
from src.errors import UserError
from src.models.classifier import ImageClassifier


def batch(n: int = 64, size: tuple[int, int] = (7, 9)) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images, v2.functional.to_dtype(images, torch.float32, scale=True)


def test_crop_with_padding_and_flip_are_exact_per_image_copies() -> None:
    images, floats = batch()
    torch.manual_seed(0)
    out = BatchAugment(crop_padding=2, hflip=True)(images)
    padded = F.pad(floats, (2, 2, 2, 2))  # v2.RandomCrop(size, padding=2): pad 2 black pixels, crop back
    draws = []
    for i in range(len(images)):
        for flipped in (False, True):
            source = padded[i].flip(-1) if flipped else padded[i]
            draws += [
                (dy, dx, flipped)
                for dy in range(5)
                for dx in range(5)
                if torch.equal(out[i], source[:, dy : dy + 7, dx : dx + 9])
            ]
    assert len(draws) == len(images), "every image is exactly one shifted (and maybe mirrored) copy"
    assert len({d[:2] for d in draws}) > 10 and {d[2] for d in draws} == {False, True}, "drawn per image"


def test_rotation_turns_each_image_by_its_own_angle_about_the_centre() -> None:
    images = torch.zeros(256, 1, 17, 17, dtype=torch.uint8)
    images[:, 0, 8, 14] = 255  # one bright pixel, 6 pixels right of the centre
    out = BatchAugment(rotation=30)(images)[:, 0]
    rows, cols = torch.meshgrid(torch.arange(17.0), torch.arange(17.0), indexing="ij")
    mass = out.sum(dim=(1, 2))
    dy, dx = (out * rows).sum(dim=(1, 2)) / mass - 8, (out * cols).sum(dim=(1, 2)) / mass - 8
    assert torch.allclose(torch.hypot(dx, dy), torch.full_like(dx, 6.0), atol=0.3), "turned about the centre"
    angles = torch.rad2deg(torch.atan2(dy, dx))
    assert angles.abs().max() <= 30.5 and angles.std() > 10, "a different angle in [-30, 30] per image"
    assert torch.equal(BatchAugment()(images), images.float() / 255), "all off: only the [0, 1] conversion"


def test_negative_settings_are_refused() -> None:
    with pytest.raises(UserError, match=r"--data.random_crop_padding \(-1\)"):
        DigitsDataModule(random_crop_padding=-1)


class BatchSpy(Callback):
    """Records the batches the model receives, i.e. after the data module's ``on_after_batch_transfer``."""

    def __init__(self) -> None:
        self.train, self.val = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch[0].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(batch[0].clone())


def test_trainer_augments_training_batches_only(tmp_path) -> None:
    dm = DigitsDataModule(batch_size=2000, random_crop_padding=1, random_hflip=True)  # one batch per split
    dm.setup("fit")
    model = ImageClassifier(dm.class_names, dm.input_shape, dm.mean, dm.std)
    spy = BatchSpy()
    trainer = Trainer(
        max_epochs=2, callbacks=[spy], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, dm)
    raw = v2.functional.to_dtype(dm.train_set.tensors[0], torch.float32, scale=True)
    for seen in spy.train:
        assert seen.dtype == torch.float32 and seen.shape == raw.shape
        # Same images in another order, most of them changed: compare sorted pixel sums, shift-invariant-ish.
        assert not torch.equal(seen.sum(dim=(1, 2, 3)).sort().values, raw.sum(dim=(1, 2, 3)).sort().values)
    assert not torch.equal(spy.train[0], spy.train[1]), "a new draw every epoch"
    assert all(torch.equal(seen, dm.val_set.tensors[0]) for seen in spy.val), "validation images untouched"
