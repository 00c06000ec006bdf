"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, no download, so a fresh clone trains."""

from typing import Any

import torch

from src.data.base import ImageDataModule


class DigitsDataModule(ImageDataModule):
    """Digits 0-9 (UCI optical recognition set as shipped in scikit-learn), split train/val/test, stratified."""

    class_names = [str(d) for d in range(10)]
    input_shape = (1, 8, 8)
    mean, std = (0.3053,), (0.3759,)  # of all 1,797 images scaled to [0, 1]

    def __init__(self, test_split: float = 0.2, **kwargs: Any) -> None:
        """
        Args:
            test_split: fraction of all images held out as the test split (always the same images).
        """
        super().__init__(**kwargs)
        self.test_split = test_split

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_digits  # imported here: ~0.2 s that only the digits need

        digits = load_digits()
        images = (torch.from_numpy(digits.images) * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # 0..16 in
        # Seed 0, not `seed`: runs with different seeds are compared on the same test images.
        train, test = self.split(images, torch.from_numpy(digits.target), self.test_split, "--data.test_split", 1, 0)
        return {"train": train, "test": test}
