"""Images and labels from ``.npz`` or ``.h5``/``.hdf5`` files: (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or
floats in [0, 1] (other integers within 0..255); values a cast would clip or wrap are refused with the fix."""

from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.base import ImageDataModule
from src.errors import UserError


def read_arrays(path: Path, images_key: str, labels_key: str) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """uint8 (N, C, H, W) images, int64 labels and the ``class_names`` array if the file has one."""
    if not path.is_file():
        raise UserError(f"array file not found: {path}. Give a .npz or .h5/.hdf5 file.")
    if path.suffix not in (".npz", ".h5", ".hdf5"):
        raise UserError(f"{path}: unsupported array file; use .npz, .h5 or .hdf5.")
    arrays = np.load(path, allow_pickle=False) if path.suffix == ".npz" else import_module("h5py").File(path, "r")
    with arrays:
        keys = list(arrays.keys())
        found = {k: np.asarray(arrays[k]) for k in (images_key, labels_key, "class_names") if k in keys}
    for key in (images_key, labels_key):
        if key not in found:
            raise UserError(f"{path} has no array {key!r} (it has {keys}); set --data.images_key/labels_key.")
    images, labels, names = found[images_key], found[labels_key], found.get("class_names")
    if len(images) != len(labels):
        raise UserError(f"{path}: {len(images)} images but {len(labels)} labels; give exactly one label per image.")
    if len(images) == 0:
        raise UserError(f"{path}: the images array is empty; it needs at least one image per class.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: labels must be integers 0..num_classes-1, got dtype {labels.dtype}.")
    names = None if names is None else [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return to_uint8_nchw(images, path), torch.from_numpy(labels.astype(np.int64)).flatten(), names


def channels_first(images: torch.Tensor, channels: Sequence[int]) -> torch.Tensor | None:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) -> (N, C, H, W), or None for other shapes; C is one of ``channels``."""
    x = images.unsqueeze(1) if images.dim() == 3 else images
    if x.dim() == 4 and x.shape[-1] in channels and x.shape[1] not in channels:
        x = x.permute(0, 3, 1, 2)
    return x if x.dim() == 4 and x.shape[1] in channels else None


def to_uint8_nchw(images: np.ndarray, path: Path) -> torch.Tensor:
    dtype, floats = images.dtype, np.issubdtype(images.dtype, np.floating)
    if floats and not np.isfinite(images).all():
        raise UserError(f"{path}: {dtype} images hold NaN or infinite values; replace them (e.g. np.nan_to_num).")
    if floats and not 0 <= images.min() <= images.max() <= 1:
        raise UserError(
            f"{path}: {dtype} images have values {images.min():g}..{images.max():g}, but float images must be in "
            "[0, 1]: divide 0-255 pixels by 255 (images / 255), or store them as uint8."
        )
    if np.issubdtype(dtype, np.integer) and not 0 <= images.min() <= images.max() <= 255:
        full = np.iinfo(dtype).max if dtype == np.uint16 else images.max()
        raise UserError(
            f"{path}: {dtype} images have values {images.min()}..{images.max()}, outside 0..255 (they would wrap "
            f"around): store 8-bit images, e.g. (images / {full} * 255).round().astype(np.uint8)."
        )
    if not floats and not np.issubdtype(dtype, np.integer):
        raise UserError(f"{path}: images of dtype {dtype}; store them as uint8 (0..255) or floats in [0, 1].")
    x = channels_first(torch.from_numpy(np.ascontiguousarray(images)), (1, 3))
    if x is None:
        raise UserError(f"{path}: images of shape {tuple(images.shape)}; expected (N,H,W), (N,H,W,C) or (N,C,H,W).")
    return ((x * 255).round() if floats else x).to(torch.uint8).contiguous()


class ArrayDataModule(ImageDataModule):
    """Arrays in a file (and optionally a test file); statistics measured on the training split."""

    def __init__(
        self,
        path: str = "data/arrays.npz",
        test_path: str | None = None,
        images_key: str = "images",
        labels_key: str = "labels",
        label_names: list[str] | None = None,
        test_split: float = 0.1,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            path: ``.npz`` or ``.h5``/``.hdf5`` file with an images array and a labels array.
            test_path: optional file with the test split; otherwise ``test_split`` of ``path`` is held out.
            images_key: name of the images array in the file(s).
            labels_key: name of the labels array (integers 0..num_classes-1).
            label_names: one name per class (label order); default: the file's ``class_names`` array, else "0", "1"...
            test_split: fraction of ``path`` held out as test when there is no ``test_path`` (stratified).
        """
        self.path, self.test_path = Path(path), Path(test_path) if test_path else None
        self.images_key, self.labels_key, self.test_split = images_key, labels_key, test_split
        self._images, self._labels, file_names = read_arrays(self.path, images_key, labels_key)
        self.class_names = [str(n) for n in label_names or file_names or range(int(self._labels.max()) + 1)]
        self._check_labels(self._labels, self.path)
        self.input_shape = tuple(self._images.shape[1:])
        super().__init__(**kwargs)

    def _check_labels(self, labels: torch.Tensor, path: Path) -> None:
        bad = labels[(labels < 0) | (labels >= len(self.class_names))]
        if len(bad):
            raise UserError(
                f"{path}: label {int(bad[0])} is out of range for {len(self.class_names)} classes "
                f"{self.class_names}; labels must be 0..{len(self.class_names) - 1} (--data.label_names gives one "
                "name per class)."
            )

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self.test_path is None:
            train, test = self.split(self._images, self._labels, self.test_split, "--data.test_split", reserve=1)
            return {"train": train, "test": test}
        *test, _ = read_arrays(self.test_path, self.images_key, self.labels_key)
        self._check_labels(test[1], self.test_path)
        return {"train": (self._images, self._labels), "test": tuple(test)}
