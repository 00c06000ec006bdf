"""The one base of every data module: a dataset says what its images are; splitting, statistics, loaders, DDP
sharding and augmentation happen here, the same way for every dataset."""

import warnings
from functools import cached_property
from math import ceil
from typing import Any, Literal

import torch
import torch.multiprocessing as mp
from lightning import LightningDataModule
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, TensorDataset

from src.data.augment import BatchAugment
from src.errors import UserError

#: Training images the measured statistics come from (a seeded sample; plenty for 3 decimals).
STATISTICS_SAMPLE = 5000


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

    ``DataLoader`` hands a batch's indices to ``__getitems__``: here ONE tensor index per batch (no per-sample
    work, no collation: see ``whole_batch``). Still a map-style dataset, so any sampler works (DDP's too).
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)  # on the GPU when the images are there
        return tuple(tensor[index] for tensor in self.tensors)


def whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The ``collate_fn`` of ``TensorImages``: its ``__getitems__`` already returns the stacked batch."""
    return batch


class ImageDataModule(LightningDataModule):
    """Base of every dataset: uint8 images in, whole batches out, augmented on the training device.

    ``class_names`` and ``input_shape`` must be cheap: they are linked into the model while the arguments are
    instantiated. ``mean``/``std``: class attributes when known, else measured on a seeded sample of the training
    split. Batches leave the loaders as uint8; the model scales and normalises them (the statistics are kept in
    its checkpoint, so a checkpoint alone classifies new images).
    """

    class_names: list[str]
    input_shape: tuple[int, int, int]

    def __init__(
        self,
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
            batch_size: images per batch, for every stage.
            num_workers: DataLoader worker processes. ``auto``: 0 for in-memory tensors (a batch is one index;
                workers would only add copies), Lightning's suggestion (CPUs per device - 1) for streamed files.
            pin_memory: page-locked host memory for faster GPU copies; ``None`` = when a GPU is present.
            persistent_workers: keep workers alive between epochs; ``None`` = only where they start slowly (spawn).
            val_split: fraction of the training images held out for validation when the dataset has no val split.
            seed: seed of the val split and the statistics sample, so every run validates on the same images.
            random_crop_padding: training augmentation: pad this many black pixels per side, crop back to size at
                a random offset (``v2.RandomCrop(size, padding)``); 0 = off. CIFAR-10 uses 4.
            random_hflip: training augmentation: mirror half of the images left-right. Off for digits.
            random_rotation: training augmentation: rotate by a random angle in [-d, d] degrees; 0 = off.
            data_on_device: keep in-memory splits on the training device (one copy up front, no host-to-device
                copy per batch). ``None`` = on a GPU or other accelerator; streamed datasets stay on the host.
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
        self.batch_size, self.num_workers, self.val_split, self.seed = batch_size, num_workers, val_split, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers, self.data_on_device = persistent_workers, data_on_device
        self.augment = BatchAugment(random_crop_padding, random_hflip, random_rotation)
        self._on_device: dict[int, tuple] = {}  # id(host split) -> (host split, its copy on the training device)
        self._datasets: dict[str, Dataset | None] = {}
        self.train_set = self.val_set = self.test_set = None

    def load_splits(self) -> dict[str, tuple[Any, torch.Tensor]]:
        """The one method to implement: ``{"train": (images, labels), "val": ..., "test": ...}``.

        Images: uint8 (N, C, H, W) tensors, or whatever ``dataset`` takes (e.g. file paths); labels: ints (N,).
        Only ``train`` is required. Without ``val``, ``val_split`` of train is held out (``split``); without
        ``test``, ``test`` and ``predict`` refuse to run (the val split is never reported as test accuracy).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits()")

    def dataset(self, images: Any, labels: torch.Tensor) -> Dataset:
        """The ``Dataset`` of one split, yielding (uint8 (C, H, W) image, label): the hook for streaming (e.g.
        decoding files in DataLoader workers). The default batches in-memory tensors (``TensorImages``)."""
        return TensorImages(images, labels.long())

    def no_test_split(self, stage: str) -> str:
        """The refusal when ``load_splits`` has no ``test``; a dataset may say what to add instead."""
        name = type(self).__name__
        return f"{name} has no test split, so there are no test images to {stage} on: add one to {name}.load_splits()"

    def split(self, images: Any, labels: torch.Tensor, fraction: float, option: str = "--data.val_split",
              reserve: int = 0, seed: int | None = None) -> tuple[tuple, tuple]:  # fmt: skip
        """``(kept, held out)``: ``fraction`` of the images (a tensor or a list) held out, stratified by class and
        seeded (``self.seed`` by default). ``option`` is the setting ``fraction`` came from; ``reserve``: how many
        more splits the kept part is cut into later (1 for test first, then val). A class or fraction too small
        to stratify is named with its fix, instead of failing inside scikit-learn with a traceback."""
        check_fraction(option, fraction, 0.1)
        labels = torch.as_tensor(labels).long()
        names, counts = getattr(self, "class_names", None) or [], torch.bincount(labels)
        present = counts.nonzero().flatten().tolist()
        for c in present:
            if counts[c] < 2 + reserve:  # one image of every class in every split
                name = names[c] if c < len(names) else str(c)
                raise UserError(
                    f"class {name!r} has {int(counts[c])} image(s), too few to split by {option} {fraction}: a "
                    f"stratified split needs at least {2 + reserve} per class (one per split). Add images of "
                    f"{name!r}, or leave that class out."
                )
        n, k = len(labels), len(present)
        held = ceil(round(fraction * n, 6))  # rounded first: 0.07 of 100 images is 7, not 8
        if held < k or n - held < k:
            side, count = ("holds out", held) if held < k else ("keeps", n - held)
            raise UserError(
                f"{option} {fraction} {side} {count} of {n} images, fewer than the {k} classes (a stratified "
                f"split needs one of each class on both sides): set {option} between {-(-100 * k // n) / 100} "
                f"and {100 * (n - k) // n / 100}, or add images."
            )
        from sklearn.model_selection import train_test_split  # imported here: ~0.2 s that only splitting needs

        seed = self.seed if seed is None else seed
        parts = train_test_split(torch.arange(n), test_size=held, stratify=labels, random_state=seed)
        pick = (lambda i: images[i]) if isinstance(images, torch.Tensor) else (lambda i: [images[j] for j in i])
        return tuple((pick(index), labels[index]) for index in parts)

    @cached_property
    def _splits(self) -> dict[str, tuple]:
        splits = dict(self.load_splits())
        if "val" not in splits:
            splits["train"], splits["val"] = self.split(*splits["train"], self.val_split)
        return splits

    def _dataset_of(self, name: str) -> Dataset | None:
        if name not in self._datasets:  # built once; None for a missing test split
            self._datasets[name] = self.dataset(*self._splits[name]) if name in self._splits else None
        return self._datasets[name]

    @cached_property
    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] of a seeded sample of the training images, read through the training
        ``Dataset``: in memory or streamed, the model normalises (and trains) the same."""
        train = self._dataset_of("train")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[:STATISTICS_SAMPLE]
        images = torch.stack([train[i][0] for i in pick.sort().values.tolist()]).float() / 255
        return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())

    mean = property(lambda self: self.statistics[0], doc="Per-channel mean in [0, 1], linked into the model.")
    std = property(lambda self: self.statistics[1], doc="Per-channel standard deviation, likewise.")

    def _require_test_split(self, stage: Any) -> None:
        if getattr(stage, "value", stage) in ("test", "predict") and "test" not in self._splits:
            raise UserError(self.no_test_split(getattr(stage, "value", stage)))

    def prepare_data(self) -> None:
        """Runs before the loggers create anything: ``test``/``predict`` without a test split stop here, so a
        failed evaluation of a run's checkpoint leaves that run untouched."""
        if self.trainer is not None:
            self._require_test_split(self.trainer.state.fn)

    def setup(self, stage: str | None = None) -> None:
        """Runs on every process: the splits' datasets (the test split also serves predict)."""
        self._require_test_split(stage)
        self.train_set, self.val_set, self.test_set = (self._dataset_of(n) for n in ("train", "val", "test"))

    def workers(self, dataset: Dataset) -> int:
        """``num_workers``, with ``auto`` resolved for this dataset and machine."""
        if self.num_workers != "auto":
            return self.num_workers
        if isinstance(dataset, TensorDataset):
            return 0
        return suggested_max_num_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def _loader(self, dataset: Dataset | None, shuffle: bool = False) -> DataLoader:
        """A plain ``DataLoader``, so Lightning's own ``DistributedSampler`` shards training under DDP (the same
        per-epoch shuffle on every rank). Evaluation gets an ``UnrepeatedDistributedSampler``: every image is
        evaluated exactly once (the default pads ranks with repeated images, biasing val/test accuracy)."""
        assert dataset is not None, "setup() has not built this split"
        dataset = self._device_copy(dataset)
        workers = self.workers(dataset)
        # Auto: keep workers only where starting them is slow (spawn/forkserver). A persistent iterator skips the
        # per-epoch seed draw every other loader makes, so from epoch 2 on the shuffle and dropout would differ
        # from the in-memory path's for the same seed; with fork, a fresh start each epoch costs milliseconds.
        method = mp.get_start_method(allow_none=True) or mp.get_all_start_methods()[0]  # [0]: the default
        keep = method != "fork" if self.persistent_workers is None else self.persistent_workers
        sampler, trainer = None, self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        in_memory = isinstance(dataset, TensorImages)
        if in_memory and workers == 0:  # deliberate: Lightning's "not many workers" hint is about per-sample loading
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        on_device = in_memory and dataset.tensors[0].device.type != "cpu"
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
            collate_fn=whole_batch if in_memory else None, pin_memory=self.pin_memory and not on_device,
            persistent_workers=keep and workers > 0,
        )  # fmt: skip

    def _device_copy(self, dataset: Dataset) -> Dataset:
        """An in-memory split moved to the training device once (see ``data_on_device``); else ``dataset``."""
        trainer = self.trainer
        if not isinstance(dataset, TensorImages) or trainer is None or self.data_on_device is False:
            return dataset
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return dataset
        host, copy = self._on_device.get(id(dataset), (None, None))
        if host is not dataset or copy.tensors[0].device != device:  # one copy of the whole split
            copy = TensorImages(*(tensor.to(device) for tensor in dataset.tensors))
            self._on_device[id(dataset)] = (dataset, copy)
        return copy

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)  # the only shuffled loader: evaluation order stays fixed

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)  # in order: prediction writers get each batch's indices from Lightning

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Runs on the training device after each batch is moved there: augment training batches only, a
        different draw per image. Only (images, labels) pairs: Lightning also passes the example input here."""
        training = self.augment.active and self.trainer is not None and self.trainer.training
        if training and isinstance(batch, (list, tuple)) and len(batch) == 2:
            return type(batch)([self.augment(batch[0]), batch[1]])
        return batch
