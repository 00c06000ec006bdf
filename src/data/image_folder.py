"""A folder of images, one sub-folder per class (``root/<class>/*.png|jpg|...``), split train/val/test, or ``train/``
(``val/``, ``test/``) roots; decoded into memory when they fit, else streamed: the same batches either way."""

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets.folder import find_classes, make_dataset

from src.data.files import IMAGE_SUFFIXES, LabelledFilesDataModule
from src.errors import UserError


class ImageFolderDataModule(LabelledFilesDataModule):
    """Class-per-folder images; statistics measured on the training split."""

    def __init__(self, data_dir: str = "data/images", **kwargs: Any) -> None:
        """
        Args:
            data_dir: a root of class folders, or a folder holding ``train/`` (and optionally ``val/``, ``test/``).
        """
        self.root = Path(data_dir)
        train_root = self.root / "train" if (self.root / "train").is_dir() else self.root
        try:
            self.class_names, _ = find_classes(str(train_root))
        except (FileNotFoundError, NotADirectoryError):
            problem = "has no class sub-folders" if train_root.is_dir() else "is not a folder"
            raise UserError(f"--data.data_dir {data_dir!r} {problem}: put images in {train_root}/<class>/.") from None
        super().__init__(**kwargs)

    @cached_property
    def listed(self) -> dict[str, tuple[list[Path], torch.Tensor]]:
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

    def no_test_split(self, stage: str) -> str:
        return (
            f"--data.data_dir {str(self.root)!r} has train/ but no test/ folder, so there are no test images "
            f"to {stage} on: add {self.root / 'test'}/<class>/ images, or put every class folder directly in "
            "one root to split train/val/test from it (--data.test_split)."
        )
