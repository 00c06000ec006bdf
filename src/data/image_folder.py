"""A folder of images, one sub-folder per class (``root/<class>/*.png|jpg|...``), split train/val/test, or ``train/``
(``val/``, ``test/``) roots; decoded into memory when they fit, else streamed: the same batches either way."""

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes, make_dataset

from src.data.base import ImageDataModule, TensorImages
from src.data.files import IMAGE_SUFFIXES, ImageFiles, read_all, read_image
from src.errors import UserError


class ImageFolderDataModule(ImageDataModule):
    """Class-per-folder images; statistics measured on the training split."""

    def __init__(
        self,
        data_dir: str = "data/images",
        image_size: int = 32,
        grayscale: bool = False,
        test_split: float = 0.1,
        skip_corrupt: bool = False,
        in_memory: bool | Literal["auto"] = "auto",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            data_dir: a root of class folders, or a folder holding ``train/`` (and optionally ``val/``, ``test/``).
            image_size: every image is resized to ``image_size`` x ``image_size``.
            grayscale: decode as one grey channel instead of RGB.
            test_split: with a single root, the fraction held out as test (stratified by class).
            skip_corrupt: skip unreadable images with a warning instead of stopping with an error.
            in_memory: decode every image once into memory, or stream files from disk with DataLoader workers;
                ``auto`` decodes when the decoded images take at most a quarter of this machine's RAM.
        """
        if image_size < 1:
            raise UserError(f"--data.image_size {image_size} must be >= 1 (pixels per side), e.g. 32")
        self.root = Path(data_dir)
        train_root = self.root / "train" if (self.root / "train").is_dir() else self.root
        try:
            self.class_names, _ = find_classes(str(train_root))
        except (FileNotFoundError, NotADirectoryError):
            problem = "has no class sub-folders" if train_root.is_dir() else "is not a folder"
            raise UserError(f"--data.data_dir {data_dir!r} {problem}: put images in {train_root}/<class>/.") from None
        self.input_shape = (1 if grayscale else 3, image_size, image_size)
        self.test_split, self.skip_corrupt, self._in_memory = test_split, skip_corrupt, in_memory
        super().__init__(**kwargs)

    @cached_property
    def _listed(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
        """Sorted files and labels of each root (``train``/``val``/``test``, or ``all``), as torchvision lists them."""
        roots = {name: self.root / name for name in ("train", "val", "test") if (self.root / name).is_dir()}
        listed, index = {}, {name: label for label, name in enumerate(self.class_names)}
        for name, root in (roots if "train" in roots else {"all": self.root}).items():
            files = make_dataset(root, index, IMAGE_SUFFIXES, allow_empty=True)
            empty = sorted(set(index) - {self.class_names[label] for _, label in files})
            if empty:
                raise UserError(
                    f"class folder {root / empty[0]} has no images ({', '.join(IMAGE_SUFFIXES)}): add images "
                    "to it, or remove the folder."
                )
            listed[name] = ([Path(path) for path, _ in files], torch.tensor([label for _, label in files]))
        return listed

    @cached_property
    def in_memory(self) -> bool:
        if self._in_memory != "auto":
            return bool(self._in_memory)
        count = sum(len(paths) for paths, _ in self._listed.values())
        needed = count * self.input_shape[0] * self.input_shape[1] ** 2
        choice = needed <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4
        how = "decoded into memory" if choice else "streamed from disk"
        rank_zero_info(f"{count} images, {needed / 2**30:.2f} GiB decoded: {how} (--data.in_memory true/false)")
        return choice

    def load_splits(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
        """``train/`` without ``test/`` has no test split: the val split is never reused as the test split."""
        splits = dict(self._listed)
        if "all" in splits:
            splits["train"], splits["test"] = self.split(*splits.pop("all"), self.test_split, "--data.test_split", 1)
        return splits

    def dataset(self, paths: list[Path], labels: torch.Tensor) -> Dataset:
        """Decoded once into memory, or streamed (headers opened now, so non-images fail before training)."""
        channels, size = self.input_shape[0], self.input_shape[1:]
        read = (lambda path: read_image(path, channels, size)) if self.in_memory else None  # headers only
        kept, images = read_all(paths, read, self.skip_corrupt, "Remove it, or pass --data.skip_corrupt true.")
        if self.in_memory:
            return TensorImages(torch.stack(images), labels[kept])
        return ImageFiles([paths[i] for i in kept], channels, size, labels[kept])

    def no_test_split(self, stage: str) -> str:
        return (
            f"--data.data_dir {str(self.root)!r} has train/ but no test/ folder, so there are no test images "
            f"to {stage} on: add {self.root / 'test'}/<class>/ images, or put every class folder directly in "
            "one root to split train/val/test from it (--data.test_split)."
        )
