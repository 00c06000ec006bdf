"""The one base of every data module: a dataset says what its images are; splits, statistics, loaders, DDP sharding
and augmentation are done here, the same way for every dataset."""

import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
import torch.multiprocessing as mp
from lightning import LightningDataModule
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_convert

from src.data.augment import BatchAugment
from src.data.sampling import fold_indices, join, split_indices, take
from src.errors import UserError

#: Training images the measured statistics come from (a seeded sample; plenty for 3 decimals).
STATISTICS_SAMPLE = 5000


def check_fraction(option: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise UserError(f"{option} {value} must be between 0 and 1 (exclusive), e.g. 0.1")


def check_loader_args(batch_size: int, num_workers: int | str) -> None:
    if batch_size < 1:
        raise UserError(f"--data.batch_size {batch_size} must be >= 1, e.g. 64")
    if num_workers != "auto" and num_workers < 0:
        raise UserError(f"--data.num_workers {num_workers} must be >= 0, or auto")


class TensorImages(TensorDataset):
    """In-memory images and labels indexed a whole batch at a time (one tensor index; ``default_convert`` passes
    the batch through uncollated), yet still map-style, so any sampler (DDP's too) works."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(tensor[index] for tensor in self.tensors)


class ImageDataModule(LightningDataModule):
    """uint8 images in, whole batches out. ``class_names`` and ``input_shape`` must be cheap (linked into the model
    while arguments are parsed); ``mean``/``std`` are class attributes when known, else measured on train."""

    class_names: list[str]
    input_shape: tuple[int, int, int]
    #: Labels are multi-hot float (N, K) rows, several classes per image (linked into the model as its task).
    multilabel: bool = False

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
        sampler: Literal["random", "balanced"] = "random",
        folds: int = 0,
        fold: int = 0,
    ) -> None:
        """
        Args:
            batch_size: images per batch, for every stage.
            num_workers: DataLoader workers; ``auto``: 0 for in-memory tensors, Lightning's suggestion for files.
            pin_memory: page-locked host memory for faster GPU copies; ``None`` = when a GPU is present.
            persistent_workers: keep workers alive between epochs; ``None`` = only where they start slowly (spawn).
            val_split: fraction of the training images held out for validation when the dataset has no val split.
            seed: seed of the val split and the statistics sample, so every run validates on the same images.
            random_crop_padding: training augmentation: random crop after padding this many black pixels; 0 = off.
            random_hflip: training augmentation: mirror half of the images left-right.
            random_rotation: training augmentation: rotate by a random angle in [-d, d] degrees; 0 = off.
            data_on_device: keep in-memory splits on the training device; ``None`` = on a GPU or other accelerator.
            sampler: ``random`` shuffles the training images; ``balanced`` draws every class equally often (with
                replacement; as many draws per epoch as training images), the same draws on a resume.
            folds: k-fold cross-validation: cut train (and any val split) into this many stratified folds; 0 = off.
            fold: with ``folds``, which fold (0 .. folds - 1) is the val split; the others train.
        """
        super().__init__()
        check_loader_args(batch_size, num_workers)
        check_fraction("--data.val_split", val_split)
        for option, value in (("random_crop_padding", random_crop_padding), ("random_rotation", random_rotation)):
            if value < 0:
                raise UserError(f"--data.{option} ({value}) must be >= 0 (0 turns it off)")
        if folds == 1 or folds < 0 or not 0 <= fold < max(folds, 1):
            raise UserError(f"--data.folds {folds} --data.fold {fold}: use folds >= 2 (0 = off) and fold in 0..folds-1")
        self.save_hyperparameters()
        self.sampler, self.folds, self.fold = sampler, folds, fold
        self.batch_size, self.num_workers, self.val_split, self.seed = batch_size, num_workers, val_split, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers, self.data_on_device = persistent_workers, data_on_device
        self.augment = BatchAugment(random_crop_padding, random_hflip, random_rotation)
        self._on_device: dict[tuple, TensorImages] = {}  # (id(host split), device) -> its copy there

    def load_splits(self) -> dict[str, tuple[Any, torch.Tensor]]:
        """The one method to implement: ``{"train": (images, labels), "val": ..., "test": ...}``, images uint8 (N, C,
        H, W) tensors or what ``dataset`` takes. Only ``train`` is required; ``test``/``predict`` refuse without it."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits()")

    def dataset(self, images: Any, labels: torch.Tensor) -> Dataset:
        """The ``Dataset`` of one split, yielding (uint8 (C, H, W) image, label): the hook for streaming."""
        return TensorImages(images, labels if labels.dim() == 2 else labels.long())

    def no_test_split(self, stage: str) -> str:
        name = type(self).__name__
        return f"{name} has no test split, so there are no test images to {stage} on: add one to {name}.load_splits()"

    def split(
        self,
        images: Any,
        labels: torch.Tensor,
        fraction: float,
        option: str = "--data.val_split",
        reserve: int = 0,
        seed: int | None = None,
    ) -> tuple[tuple, tuple]:
        """``(kept, held out)`` images and labels, stratified and seeded (multi-label: random); ``option`` names the
        setting in errors, ``reserve`` how many more splits the kept part is cut into later (a class then needs one
        image more)."""
        seed = self.seed if seed is None else seed
        kept, out = split_indices(labels, fraction, option, self.class_names, reserve, seed)
        return (take(images, kept), take(labels, kept)), (take(images, out), take(labels, out))

    @cached_property
    def _splits(self) -> dict[str, tuple[Any, torch.Tensor, list[str]]]:
        """Each split's images, labels and ids: paths for files, else ``<split>:<position in load_splits()>``."""
        splits = {}
        for name, (images, labels) in self.load_splits().items():
            files = isinstance(images, list) and all(isinstance(p, (str, Path)) for p in images)
            ids = [str(p) for p in images] if files else [f"{name}:{i}" for i in range(len(labels))]
            splits[name] = (images, torch.as_tensor(labels), ids)
        if self.folds:  # the whole training pool is cut into folds
            pool = splits.pop("train")
            if "val" in splits:
                pool = tuple(join(a, b) for a, b in zip(pool, splits.pop("val"), strict=True))
            parts = fold_indices(pool[1], self.folds, self.fold, self.class_names, self.seed)
        elif "val" not in splits:
            pool = splits.pop("train")
            parts = split_indices(pool[1], self.val_split, "--data.val_split", self.class_names, seed=self.seed)
        else:
            return splits
        splits["train"], splits["val"] = (tuple(take(x, part) for x in pool) for part in parts)
        return splits

    @cached_property
    def _datasets(self) -> dict[str, Dataset]:
        return {name: self.dataset(images, labels) for name, (images, labels, _) in self._splits.items()}

    def sample_ids(self, split: str) -> list[str]:
        """One id per image of ``split`` (``predict``: the test split), in its order, the same in every fold."""
        return self._splits["test" if split == "predict" else split][2]

    def split_labels(self, split: str) -> torch.Tensor:
        """The labels of ``split``: class indices, or multi-hot rows for multi-label data."""
        return self._splits["test" if split == "predict" else split][1]

    @cached_property
    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of a seeded sample, read through the training ``Dataset`` (in memory or not)."""
        train = self._datasets["train"]
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[:STATISTICS_SAMPLE]
        images = torch.stack([train[i][0] for i in pick.sort().values.tolist()]).float() / 255
        return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(images.std(dim=(0, 2, 3)).tolist())

    task = property(lambda self: "multilabel" if self.multilabel else "multiclass", doc="Linked into the model.")
    mean = property(lambda self: self.statistics[0], doc="Per-channel mean in [0, 1], linked into the model.")
    std = property(lambda self: self.statistics[1], doc="Per-channel standard deviation, likewise.")

    def prepare_data(self) -> None:
        """Builds the splits before the loggers create anything, so a data mistake or a refused ``test``/``predict``
        leaves the run untouched (``setup`` builds them on the other processes)."""
        if self.trainer is not None:
            self.setup(self.trainer.state.fn)

    def setup(self, stage: str | None = None) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
        if self.sampler == "balanced" and self.multilabel:
            raise UserError(
                "--data.sampler balanced draws classes equally, one class per image; this data is "
                "multi-label: use --model.class_weights balanced (per-label positive weights) instead"
            )
        if stage in ("test", "predict") and "test" not in self._datasets:
            raise UserError(self.no_test_split(stage))
        self.train_set, self.val_set, self.test_set = (self._datasets.get(n) for n in ("train", "val", "test"))

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        """Lightning's ``DistributedSampler`` shards training under DDP; evaluation counts every image once."""
        dataset, trainer, workers = self._device_copy(dataset), self.trainer, self.num_workers
        in_memory = isinstance(dataset, TensorImages)
        if workers == "auto":  # in-memory batches are one index: workers would only copy them
            workers = 0 if in_memory else suggested_max_num_workers(trainer.num_devices if trainer is not None else 1)
        if in_memory and workers == 0:  # Lightning's "not many workers" hint is about per-sample loading
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Persistent workers skip the per-epoch seed draw (shuffles would differ): by default only where spawning.
        method = mp.get_start_method(allow_none=True) or mp.get_all_start_methods()[0]
        keep = (method != "fork" if self.persistent_workers is None else self.persistent_workers) and workers > 0
        sampler = None
        if shuffle and self.sampler == "balanced":  # a DistributedSampler: Lightning leaves it, and sets its epoch
            from src.data.sampling import BalancedSampler

            rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler, shuffle = BalancedSampler(self.split_labels("train"), *rank, seed=self.seed), False
        elif not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
        pin = self.pin_memory and not (in_memory and dataset.tensors[0].device.type != "cpu")
        options = dict(num_workers=workers, collate_fn=default_convert if in_memory else None, pin_memory=pin)
        # Keywords, not positions: Lightning re-creates the loader with its own sampler under DDP.
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler, persistent_workers=keep, **options
        )

    def _device_copy(self, dataset: Dataset) -> Dataset:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if not isinstance(dataset, TensorImages) or device.type == "cpu" or self.data_on_device is False:
            return dataset
        if (id(dataset), device) not in self._on_device:  # copied once: the datasets live as long as self
            self._on_device[id(dataset), device] = TensorImages(*(tensor.to(device) for tensor in dataset.tensors))
        return self._on_device[id(dataset), device]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)  # the only shuffled loader: evaluation order stays fixed

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    predict_dataloader = test_dataloader  # in order: prediction writers get each batch's indices from Lightning

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augments training (images, labels) batches only; Lightning also passes the example input here."""
        training = self.augment.active and self.trainer is not None and self.trainer.training
        if training and isinstance(batch, (list, tuple)) and len(batch) == 2:
            return type(batch)([self.augment(batch[0]), batch[1]])
        return batch
