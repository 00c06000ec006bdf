"""A folder of images, one sub-folder per class (``root/<class>/*.png|jpg|jpeg|bmp|webp``), decoded once into memory.

Either one root split into train/val/test (stratified, seeded), or separate ``train/``, ``val/`` and ``test/``
roots under ``data_dir``. Images of any size are resized to ``image_size``; grey or RGB as configured.
"""

import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2

from src.data.base import MeasuredImageDataModule
from src.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageFolderDataModule(MeasuredImageDataModule):
    """Class-per-folder images; normalisation statistics are measured on the training split."""

    def __init__(
        self,
        data_dir: str = "data/images",
        image_size: int = 32,
        grayscale: bool = False,
        test_split: float = 0.1,
        skip_corrupt: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            data_dir: a root of class folders, or a folder holding ``train/`` (and optionally ``val/``, ``test/``).
            image_size: every image is resized to ``image_size`` x ``image_size``.
            grayscale: decode as one grey channel instead of RGB.
            test_split: with a single root, the fraction held out as test (stratified by class).
            skip_corrupt: skip unreadable images with a warning instead of stopping with an error.
            **kwargs: batch size, workers, val split and seed: see ``InMemoryImageDataModule``.
        """
        self.root = Path(data_dir)
        train_root = self.root / "train" if (self.root / "train").is_dir() else self.root
        if not train_root.is_dir():
            raise UserError(f"--data.data_dir {data_dir!r} is not a folder. Give a folder of class sub-folders.")
        try:
            self.class_names, _ = find_classes(str(train_root))
        except FileNotFoundError:
            raise UserError(
                f"--data.data_dir {data_dir!r} has no class sub-folders: put images in {train_root}/<class>/."
            ) from None
        self.input_shape = (1 if grayscale else 3, image_size, image_size)
        self.image_size, self.grayscale = image_size, grayscale
        self.test_split, self.skip_corrupt = test_split, skip_corrupt
        super().__init__(data_dir=data_dir, **kwargs)

    def _read_folder(self, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every image under ``root/<class>/`` into one uint8 (N, C, H, W) tensor, resized."""
        mode = "L" if self.grayscale else "RGB"
        resize = v2.Resize((self.image_size, self.image_size), antialias=True)
        images, labels = [], []
        for label, name in enumerate(self.class_names):
            files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)}).")
            for path in files:
                try:
                    with Image.open(path) as pil_image:
                        image = v2.functional.pil_to_tensor(pil_image.convert(mode))
                except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
                    if not self.skip_corrupt:
                        raise UserError(
                            f"cannot read image {path} ({err}). Remove it, or pass --data.skip_corrupt true."
                        ) from None
                    warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
                    continue
                images.append(image if image.shape[-2:] == (self.image_size,) * 2 else resize(image))
                labels.append(label)
        return torch.stack(images), torch.tensor(labels)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """train/val/test tensors, decoded once: separate roots if present, else a stratified split of one root."""
        if (self.root / "train").is_dir():
            splits = {"train": self._read_folder(self.root / "train")}
            for name in ("val", "test"):
                if (self.root / name).is_dir():
                    splits[name] = self._read_folder(self.root / name)
            if "val" not in splits:
                splits["train"], splits["val"] = self.split(*splits["train"], self.val_split)
            splits.setdefault("test", splits["val"])
            return splits
        rest, test = self.split(*self._read_folder(self.root), self.test_split)
        train, val = self.split(*rest, self.val_split)
        return {"train": train, "val": val, "test": test}
