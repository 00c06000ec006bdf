"""LightningDataModules: every image source behind the same interface (class_names, input_shape, loaders)."""

from src.data.arrays import ArrayDataModule
from src.data.augment import BatchAugment
from src.data.base import ImageDataModule, MeasuredImageDataModule
from src.data.cifar import CIFAR10DataModule
from src.data.digits import DigitsDataModule
from src.data.files import FilesDataModule
from src.data.image_folder import ImageFolderDataModule
from src.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "ArrayDataModule",
    "BatchAugment",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FilesDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "MeasuredImageDataModule",
]
