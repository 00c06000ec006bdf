"""Shared DataModule logic: train/val split, loaders, class names, input shape, normalisation statistics.

A dataset subclass only says what its classes and image shape are and how to load a split as a uint8 tensor;
everything else (splitting, normalising, batching) happens here, the same way for every dataset.
"""

from functools import cached_property

import torch
from lightning import LightningDataModule
from sklearn.model_selection import train_test_split
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from torchvision.transforms import v2

from src.errors import UserError


class InMemoryImageDataModule(LightningDataModule):
    """Base for datasets that fit in memory: decoded once into uint8 tensors, normalised once, then batched.

    Subclasses set ``class_names``, ``input_shape``, ``mean``, ``std`` and implement ``load_split``. Images leave
    the loaders as floats in [0, 1]; ``mean``/``std`` are linked into the model, which normalises on its own device
    and keeps the statistics in its checkpoint (so a checkpoint alone can classify new images).
    """

    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        val_split: float = 0.1,
        seed: int = 42,
    ) -> None:
        """
        Args:
            data_dir: folder holding (or receiving) the dataset files (unused by built-in datasets like digits).
            batch_size: images per batch, for every stage.
            num_workers: DataLoader worker processes; 0 is fastest for in-memory tensors (batches are one index).
            pin_memory: page-locked host memory for faster GPU copies; ``None`` = when a GPU is present.
            val_split: fraction of the training images held out for validation (a fixed, seeded split).
            seed: seed of the train/val split, so every run validates on the same images.
        """
        super().__init__()
        if not 0.0 < val_split < 1.0:
            raise UserError(f"--data.val_split {val_split} must be between 0 and 1 (exclusive), e.g. 0.1")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.val_split = val_split
        self.seed = seed
        self.transform = v2.ToDtype(torch.float32, scale=True)
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as uint8 (N, C, H, W) and int64 labels (N,) of the training or the test split."""
        raise NotImplementedError

    def _dataset(self, images: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
        return TensorDataset(self.transform(images), labels.long())

    def setup(self, stage: str | None = None) -> None:
        """Runs on every process: build the splits the stage needs (the test split also serves predict)."""
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self.load_split(train=True)
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
            n_val = max(1, round(len(labels) * self.val_split))
            val_idx, train_idx = order[:n_val], order[n_val:]
            self.train_set = self._dataset(images[train_idx], labels[train_idx])
            self.val_set = self._dataset(images[val_idx], labels[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._dataset(*self.load_split(train=False))

    def _loader(self, dataset: TensorDataset | None, shuffle: bool = False) -> DataLoader:
        """Whole batches by one tensor index each: no per-sample ``__getitem__`` and no collate.

        ``TensorDataset`` accepts a list of indices, so a ``BatchSampler`` used as the sampler (with
        ``batch_size=None``) yields ready batches; the order is the same as ``DataLoader(shuffle=...)``'s.
        """
        assert dataset is not None, "setup() has not built this split"
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        return DataLoader(
            dataset,
            sampler=BatchSampler(order, self.batch_size, drop_last=False),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """The only shuffled loader: evaluation order stays fixed."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        """Plain per-sample batching of the test split: prediction writers get each batch's sample indices."""
        assert self.test_set is not None, "setup('predict') has not built the test split"
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)


class MeasuredImageDataModule(InMemoryImageDataModule):
    """Base for your own data (image folders, arrays): splits made once, statistics measured on the train split.

    Subclasses implement ``load_splits`` returning uint8 images and labels for ``train``, ``val`` and ``test``;
    ``split`` makes a stratified, seeded split when the source has no separate one.
    """

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    @cached_property
    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return self.load_splits()

    def split(self, images: torch.Tensor, labels: torch.Tensor, fraction: float) -> tuple[tuple, tuple]:
        """Stratified by class, seeded: ``(1 - fraction, fraction)`` of the images."""
        keep, held = train_test_split(
            torch.arange(len(labels)), test_size=fraction, stratify=labels, random_state=self.seed
        )
        return (images[keep], labels[keep]), (images[held], labels[held])

    @cached_property
    def mean(self) -> tuple[float, ...]:  # type: ignore[override]
        """Per-channel mean of the training images in [0, 1], measured once and linked into the model."""
        return tuple((self._splits["train"][0].float() / 255).mean(dim=(0, 2, 3)).tolist())

    @cached_property
    def std(self) -> tuple[float, ...]:  # type: ignore[override]
        return tuple((self._splits["train"][0].float() / 255).std(dim=(0, 2, 3)).tolist())

    def setup(self, stage: str | None = None) -> None:
        """Runs on every process: wrap the prepared splits (the test split also serves predict)."""
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (
                self._dataset(*self._splits[name]) for name in ("train", "val", "test")
            )
