"""Shared DataModule logic: train/val split, loaders, class names, input shape, normalisation statistics, augmentation.

A dataset subclass only says what its classes and image shape are and how to load a split as a uint8 tensor;
everything else (splitting, batching, augmenting) happens here, the same way for every dataset.
"""

import warnings
from functools import cached_property
from math import ceil
from pathlib import Path
from typing import Literal

import torch
import torch.multiprocessing as mp
from lightning import LightningDataModule
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, TensorDataset

from src.data.augment import BatchAugment
from src.errors import UserError

#: Training images the statistics of image folders and arrays are measured on (a seeded sample; plenty for 3 decimals).
STATISTICS_SAMPLE = 5000
#: Where verified archives found in ``data_dir`` (e.g. a read-only ``../shared/datasets``) are extracted.
EXTRACT_DIR = Path("data")


def check_fraction(option: str, value: float, example: float) -> None:
    """A split fraction must leave images on both sides: refuse 0, 1 and beyond in one line."""
    if not 0.0 < value < 1.0:
        raise UserError(f"{option} {value} must be between 0 and 1 (exclusive), e.g. {example}")


def check_loader_args(batch_size: int, num_workers: int | str) -> None:
    """Refused here, before a run directory exists, not by the DataLoader once the run has started."""
    if batch_size < 1:
        raise UserError(f"--data.batch_size {batch_size} must be >= 1, e.g. 64")
    if num_workers != "auto" and num_workers < 0:
        raise UserError(f"--data.num_workers {num_workers} must be >= 0, or auto")


class TensorImages(TensorDataset):
    """In-memory images and labels, fetched a whole batch at a time.

    PyTorch's ``DataLoader`` hands a batch's indices to ``__getitems__`` when a dataset has one: here that is ONE
    tensor index per batch (no per-sample ``__getitem__``, no collation; see ``whole_batch``). It is still a plain
    map-style dataset, so any sampler works: ``RandomSampler``, or Lightning's ``DistributedSampler`` under DDP.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)  # on the GPU when the images are there
        return tuple(tensor[index] for tensor in self.tensors)

    def to(self, device: torch.device) -> "TensorImages":
        """The same images and labels on ``device`` (one copy of the whole split)."""
        return TensorImages(*(tensor.to(device) for tensor in self.tensors))


def whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The ``collate_fn`` of ``TensorImages``: its ``__getitems__`` already returns the stacked batch."""
    return batch


class ImageDataModule(LightningDataModule):
    """Base of every dataset: uint8 images in, whole batches out, augmented on the training device.

    Subclasses set ``class_names``, ``input_shape``, ``mean``, ``std`` and implement ``load_split``. Splits are
    kept as uint8 (N, C, H, W) tensors (the fast path: each batch is ONE tensor index, no per-sample work, 4x less
    memory and host-to-GPU traffic than floats); a subclass may instead hand ``_dataset`` a streaming ``Dataset``
    of uint8 (C, H, W) images for data too large for memory. Batches leave the loaders as uint8; the model
    converts them to [0, 1] floats and normalises with ``mean``/``std`` (linked into it and kept in its
    checkpoint, so a checkpoint alone can classify new images). Training batches are augmented per image in
    ``on_after_batch_transfer``, i.e. on the GPU when training on one.
    """

    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        num_workers: int | Literal["auto"] = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        val_split: float = 0.1,
        seed: int = 42,
        random_crop_padding: int = 0,
        random_hflip: bool = False,
        random_rotation: float = 0.0,
        data_on_device: bool | None = None,
    ) -> None:
        """
        Args:
            data_dir: folder holding (or receiving) the dataset files (unused by built-in datasets like digits).
            batch_size: images per batch, for every stage.
            num_workers: DataLoader worker processes. ``auto``: 0 for in-memory tensors (a batch is one index;
                workers would only add copies), Lightning's suggestion (CPUs per device - 1) for streamed files.
            pin_memory: page-locked host memory for faster GPU copies; ``None`` = when a GPU is present.
            persistent_workers: keep workers alive between epochs; ``None`` = only where they start slowly (spawn).
            val_split: fraction of the training images held out for validation (a fixed, seeded split).
            seed: seed of the train/val split, so every run validates on the same images.
            random_crop_padding: training augmentation: pad this many black pixels per side, crop back to size at
                a random offset (``v2.RandomCrop(size, padding)``); 0 = off. CIFAR-10 uses 4.
            random_hflip: training augmentation: mirror half of the images left-right. Off for digits.
            random_rotation: training augmentation: rotate by a random angle in [-d, d] degrees; 0 = off.
            data_on_device: keep in-memory splits on the training device (one copy up front; batches are indexed
                and augmented there, no host-to-device copy per batch). ``None`` = on a GPU (or other accelerator)
                when the splits are in memory; streamed datasets always stay on the host.
        """
        super().__init__()
        check_loader_args(batch_size, num_workers)
        check_fraction("--data.val_split", val_split, 0.1)
        if random_crop_padding < 0 or random_rotation < 0:
            raise UserError(
                f"--data.random_crop_padding ({random_crop_padding}) and --data.random_rotation "
                f"({random_rotation}) must be >= 0 (0 turns them off)"
            )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.val_split = val_split
        self.seed = seed
        self.augment = BatchAugment(random_crop_padding, random_hflip, random_rotation)
        self.data_on_device = data_on_device
        self._on_device: dict[int, tuple] = {}  # id(host split) -> (host split, its copy on the training device)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as uint8 (N, C, H, W) and int64 labels (N,) of the training or the test split."""
        raise NotImplementedError

    def _dataset(self, images: torch.Tensor, labels: torch.Tensor) -> Dataset:
        return TensorImages(images, labels.long())

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

    def workers(self, dataset: Dataset) -> int:
        """``num_workers``, with ``auto`` resolved for this dataset and machine."""
        if self.num_workers != "auto":
            return self.num_workers
        if isinstance(dataset, TensorDataset):
            return 0
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return suggested_max_num_workers(devices)

    def _loader(self, dataset: Dataset | None, shuffle: bool = False) -> DataLoader:
        """A plain ``DataLoader``, so Lightning's own ``DistributedSampler`` injection shards it under DDP.

        In-memory tensors (``TensorImages``) fetch a whole batch with one tensor index and skip collation. Under
        DDP, evaluation loaders get an ``UnrepeatedDistributedSampler``: every image is evaluated exactly once (the
        default sampler pads ranks with repeated images, biasing val/test accuracy); training keeps Lightning's
        ``DistributedSampler``, the same per-epoch shuffle on every rank (seeded by the global seed and the epoch).
        """
        assert dataset is not None, "setup() has not built this split"
        dataset = self._device_copy(dataset)
        workers = self.workers(dataset)
        # Auto: keep workers only where starting them is slow (spawn/forkserver). A persistent iterator skips the
        # per-epoch seed draw every other loader makes, so from epoch 2 on the shuffle and dropout would differ
        # from the in-memory path's for the same seed; with fork, a fresh start each epoch costs milliseconds.
        method = mp.get_start_method(allow_none=True) or mp.get_all_start_methods()[0]  # [0]: the default
        keep = method != "fork" if self.persistent_workers is None else self.persistent_workers
        persistent = keep and workers > 0
        sampler = None
        trainer = self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        in_memory = isinstance(dataset, TensorImages)
        on_device = in_memory and dataset.tensors[0].device.type != "cpu"
        if in_memory and workers == 0:  # deliberate: Lightning's "not many workers" hint is about per-sample loading
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=whole_batch if in_memory else None,
            num_workers=workers,
            pin_memory=self.pin_memory and not on_device,
            persistent_workers=persistent,
        )

    def _device_copy(self, dataset: Dataset) -> Dataset:
        """An in-memory split moved to the training device once (see ``data_on_device``); else ``dataset``."""
        trainer = self.trainer
        if not isinstance(dataset, TensorImages) or trainer is None or self.data_on_device is False:
            return dataset
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return dataset
        host, copy = self._on_device.get(id(dataset), (None, None))
        if host is not dataset or copy.tensors[0].device != device:
            host, copy = self._on_device[id(dataset)] = (dataset, dataset.to(device))
        return copy

    def train_dataloader(self) -> DataLoader:
        """The only shuffled loader: evaluation order stays fixed."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        """The test split in order; prediction writers get each batch's sample indices from Lightning."""
        return self._loader(self.test_set)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> tuple:
        """Runs on the training device after each batch is moved there: augment training batches only."""
        # Only (images, labels) batches: Lightning also passes the model's example input through this hook.
        training = self.augment.active and self.trainer is not None and self.trainer.training
        if training and isinstance(batch, (list, tuple)) and len(batch) == 2:
            images, labels = batch
            return type(batch)([self.augment(images), labels])
        return batch


class MeasuredImageDataModule(ImageDataModule):
    """Base for your own data (image folders, arrays): splits made once, statistics measured on the train split.

    Subclasses implement ``load_splits`` returning images and labels for ``train``, ``val`` and ``test``: uint8
    tensors, or anything ``_dataset`` turns into a ``Dataset`` (e.g. file paths to stream). ``split`` makes a
    stratified, seeded split when the source has no separate one.
    """

    def load_splits(self) -> dict[str, tuple]:
        raise NotImplementedError

    @cached_property
    def _splits(self) -> dict[str, tuple]:
        return self.load_splits()

    def split(
        self,
        images: torch.Tensor | list,
        labels: torch.Tensor,
        fraction: float,
        option: str = "--data.val_split",
        reserve: int = 0,
    ) -> tuple[tuple, tuple]:
        """Stratified by class, seeded: ``(1 - fraction, fraction)`` of the images (a tensor or a list).

        ``option`` is the setting ``fraction`` came from; ``reserve``: how many more splits the kept part is cut
        into later (1 for test first, then val). A class or fraction too small to stratify is named with its fix
        here, instead of failing inside scikit-learn with a traceback.
        """
        check_fraction(option, fraction, 0.1)
        names = getattr(self, "class_names", None) or []
        counts = torch.bincount(labels.long())
        present = counts.nonzero().flatten().tolist()
        need = 2 + reserve  # one image of every class in every split
        for c in present:
            if counts[c] < need:
                name = names[c] if c < len(names) else str(c)
                raise UserError(
                    f"class {name!r} has {int(counts[c])} image(s), too few to split by {option} {fraction}: a "
                    f"stratified split needs at least {need} per class (one per split). Add images of {name!r}, "
                    "or leave that class out."
                )
        n, k, n_held = len(labels), len(present), ceil(fraction * len(labels))
        if n_held < k or n - n_held < k:
            side, count = ("holds out", n_held) if n_held < k else ("keeps", n - n_held)
            raise UserError(
                f"{option} {fraction} {side} {count} of {n} images, fewer than the {k} classes (a stratified "
                f"split needs one of each class on both sides): set {option} between {-(-100 * k // n) / 100} "
                f"and {100 * (n - k) // n / 100}, or add images."
            )
        from sklearn.model_selection import train_test_split  # imported here: ~0.2 s that only this split needs

        keep, held = train_test_split(
            torch.arange(len(labels)), test_size=fraction, stratify=labels, random_state=self.seed
        )
        if isinstance(images, torch.Tensor):
            return (images[keep], labels[keep]), (images[held], labels[held])
        return ([images[i] for i in keep], labels[keep]), ([images[i] for i in held], labels[held])

    def statistics_sample(self) -> torch.Tensor:
        """uint8 training images the normalisation statistics are measured on: a seeded sample of at most
        ``STATISTICS_SAMPLE`` (all of a smaller split), in split order, read through the training ``Dataset`` so it
        is the same whether images are held in memory or streamed: both paths normalise, and train, identically."""
        train = self._dataset(*self._splits["train"])
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[:STATISTICS_SAMPLE]
        return torch.stack([train[i][0] for i in pick.sort().values.tolist()])

    @cached_property
    def _statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        images = self.statistics_sample().float() / 255
        return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())

    @property
    def mean(self) -> tuple[float, ...]:  # type: ignore[override]
        """Per-channel mean of the training images in [0, 1], measured once and linked into the model."""
        return self._statistics[0]

    @property
    def std(self) -> tuple[float, ...]:  # type: ignore[override]
        return self._statistics[1]

    def setup(self, stage: str | None = None) -> None:
        """Runs on every process: wrap the prepared splits (the test split also serves predict)."""
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (
                self._dataset(*self._splits[name]) for name in ("train", "val", "test")
            )
