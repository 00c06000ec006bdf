"""LightningDataModules: every image source behind the same interface (class_names, input_shape, loaders)."""

from src.data.base import InMemoryImageDataModule
from src.data.digits import DigitsDataModule
from src.data.image_folder import ImageFolderDataModule
from src.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataModule",
    "MNISTDataModule",
]
