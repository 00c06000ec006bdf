"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, no download, so a fresh clone trains."""

from typing import Any

import torch

from src.data.base import ImageDataModule, check_fraction


class DigitsDataModule(ImageDataModule):
    """Digits 0-9 (UCI optical recognition set as shipped in scikit-learn), split train/val/test with fixed seeds."""

    class_names = [str(d) for d in range(10)]
    input_shape = (1, 8, 8)
    mean, std = (0.3053,), (0.3759,)  # measured on all 1,797 images after scaling to [0, 1]

    def __init__(self, test_split: float = 0.2, **kwargs: Any) -> None:
        """
        Args:
            test_split: fraction of all images held out as the test split (always the same images).
            **kwargs: batch size, workers, val split and seed: see ``ImageDataModule``.
        """
        check_fraction("--data.test_split", test_split, 0.2)
        super().__init__(**kwargs)
        self.test_split = test_split

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits  # imported here: ~0.2 s that only the digits need

        digits = load_digits()
        # 0..16 intensities -> uint8 0..255, like every other image source.
        images = (torch.from_numpy(digits.images) * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        # The test images never depend on `seed`: runs with different seeds are compared on the same test set.
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        n_test = round(len(labels) * self.test_split)
        idx = order[n_test:] if train else order[:n_test]
        return images[idx], labels[idx]
