"""The Python API: a checkpoint (or its ONNX export) in, class names and probabilities out.

    from src.predict import Predictor
    predictor = Predictor.from_checkpoint("logs/cnn/version_0/checkpoints/last.ckpt")  # or .from_onnx(export dir)
    for p in predictor.predict(["shoe.jpg", "photos/"], top_k=3):
        print(p.source, p.classes, p.probs)

Images: file paths (a file, a folder searched recursively, a glob), PIL images, NumPy arrays or tensors (H x W,
H x W x C or C x H x W; 4-D: a batch; uint8, uint16 or [0, 1] floats) of any size and channel count.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.callbacks.evaluation import check_top_k
from src.data.images import find_images, pil_to_uint8, read_image
from src.models.classifier import ImageClassifier, probabilities

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


@dataclass
class Prediction:
    """The ``top_k`` most probable classes of one image, most probable first."""

    source: str
    classes: list[str]
    probs: list[float]

    @property
    def label(self) -> str:
        """The most probable class."""
        return self.classes[0]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
    """A checkpoint of this template in eval mode (``ImageClassifier.from_checkpoint``: only the file is read)."""
    return ImageClassifier.from_checkpoint(checkpoint, device=device)


def _array_to_chw(x: torch.Tensor) -> torch.Tensor:
    """(H, W), (H, W, C) or (C, H, W) -> (C, H, W); uint16 -> [0, 1] floats (uint8 and floats pass through)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    elif x.dim() == 3 and x.shape[-1] in (1, 2, 3, 4) and x.shape[0] not in (1, 2, 3, 4):
        x = x.permute(2, 0, 1)
    if x.dim() != 3:
        raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W), got shape {tuple(x.shape)}")
    if x.dtype in (torch.uint16, torch.int32):
        return x.float() / 65535
    return x if x.dtype == torch.uint8 else x.float()


class Predictor:
    """Classifies images with a trained model: ``predict(images, top_k)`` -> class names and probabilities."""

    def __init__(self, model: ImageClassifier, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.class_names: list[str] = list(model.class_names)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device | None = None) -> "Predictor":
        """A checkpoint of this template (see ``load_model``)."""
        return cls(load_model(checkpoint), device)

    @classmethod
    def from_onnx(cls, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> "Predictor":
        """An ONNX export (``model.onnx`` or its folder, written by ``python -m src.train export``) run by
        onnxruntime, without the checkpoint; needs ``pip install -e '.[export]'``."""
        from src.export import OnnxModel  # onnxruntime only when asked for

        return cls(OnnxModel(path, providers), device="cpu")  # type: ignore[arg-type]  # duck-typed: see OnnxModel

    def _images(self, images: ImageLike | Iterable[ImageLike]) -> list[tuple[str, torch.Tensor]]:
        """(source, (C, H, W) tensor) per image; files and PIL images decoded exactly as the CLI does."""
        spec = self.model.input_spec
        if isinstance(images, (str, Path, Image.Image)) or (
            isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim in (2, 3)
        ):
            images = [images]
        out: list[tuple[str, torch.Tensor]] = []
        for n, item in enumerate(images):
            if isinstance(item, (str, Path)):
                out += [(str(p), read_image(p, spec.channels, spec.size)) for p in find_images(item)]
            elif isinstance(item, Image.Image):
                out.append((f"<image {n}>", pil_to_uint8(item, spec.channels, spec.size)))
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                tensor = torch.from_numpy(np.ascontiguousarray(item)) if isinstance(item, np.ndarray) else item
                batch = tensor if tensor.dim() == 4 else tensor.unsqueeze(0)
                out += [(f"<array {n}[{i}]>" if tensor.dim() == 4 else f"<array {n}>", _array_to_chw(image))
                        for i, image in enumerate(batch)]  # fmt: skip
            else:
                raise TypeError(f"cannot classify a {type(item).__name__}: give paths, PIL images, arrays or tensors")
        return out

    def probabilities(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 64) -> torch.Tensor:
        """(N, num_classes) class probabilities, in input order (folders expanded in sorted order)."""
        return self._sources_and_probabilities(images, batch_size)[1]

    def _sources_and_probabilities(self, images: ImageLike | Iterable[ImageLike], batch_size: int) -> tuple:
        sources, tensors = zip(*self._images(images), strict=True)
        with torch.no_grad():
            chunks = [
                self.model([x.to(self.device) for x in tensors[i : i + batch_size]])
                for i in range(0, len(tensors), batch_size)
            ]
        return list(sources), probabilities(torch.cat(chunks)).cpu()

    def predict(
        self, images: ImageLike | Iterable[ImageLike], top_k: int = 3, batch_size: int = 64
    ) -> list[Prediction]:
        """The ``top_k`` classes of every image, most probable first."""
        check_top_k(top_k, self.class_names)
        sources, probs = self._sources_and_probabilities(images, batch_size)
        values, classes = probs.topk(top_k, dim=1)
        return [
            Prediction(source, [self.class_names[c] for c in cs], ps)
            for source, cs, ps in zip(sources, classes.tolist(), values.tolist(), strict=True)
        ]
