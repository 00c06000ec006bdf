"""LightningDataModules: every image source behind the same interface (class_names, input_shape, loaders)."""

from src.data.arrays import ArrayDataModule
from src.data.base import InMemoryImageDataModule, MeasuredImageDataModule
from src.data.digits import DigitsDataModule
from src.data.image_folder import ImageFolderDataModule
from src.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "ArrayDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataModule",
    "MNISTDataModule",
    "MeasuredImageDataModule",
]
