"""The Python API: a checkpoint in, class names and probabilities out (the seed tutorials' ``predict(inputs, topk)``).

    from src.predict import Predictor
    predictor = Predictor.from_checkpoint("logs/cnn/version_0/checkpoints/last.ckpt")
    for p in predictor.predict(["shoe.jpg", "photos/"], top_k=3):
        print(p.source, p.classes, p.probs)

Images may be file paths (a file, a folder searched recursively, a glob), PIL images, NumPy arrays or tensors
(H x W, H x W x C or C x H x W; a 4-D array is a batch; uint8, uint16 or [0, 1] floats), of any size and channel
count: the model's own preprocessing converts them to what it was trained on.
``Predictor.from_onnx("logs/cnn/version_0/export")`` does the same with an ONNX export (``src.export``).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from src.callbacks.predictions import check_top_k
from src.data.images import find_images, pil_to_uint8, read_image
from src.models.classifier import ImageClassifier

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
    """A checkpoint of this template as an ``ImageClassifier`` in eval mode.

    Unpickling is weights-only (no code in the file runs), and nothing else is read: no data, no config, no
    pretrained weights file or download (the checkpoint holds every weight).
    """
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location=device, weights_only=True)
    return model.eval()


def _array_to_chw(x: torch.Tensor) -> torch.Tensor:
    """(H, W), (H, W, C) or (C, H, W) -> (C, H, W); uint16 -> [0, 1] floats (uint8 and floats pass through)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    elif x.dim() == 3 and x.shape[-1] in (1, 2, 3, 4) and x.shape[0] not in (1, 2, 3, 4):
        x = x.permute(2, 0, 1)
    if x.dim() != 3:
        raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint16 or x.dtype == torch.int32:
        return x.float() / 65535
    if x.dtype == torch.bool:
        return x.float()
    return x if x.dtype == torch.uint8 else x.float()


class Predictor:
    """Classifies images with a trained model: ``predict(images, top_k)`` -> class names and probabilities."""

    def __init__(self, model: ImageClassifier, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.class_names: list[str] = list(model.class_names)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device | None = None) -> "Predictor":
        """Load a checkpoint safely (see ``load_model``)."""
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
        return self._probabilities(self._images(images), batch_size)[1]

    def _probabilities(self, items: Sequence[tuple[str, torch.Tensor]], batch_size: int) -> tuple[list[str], Any]:
        chunks = []
        for start in range(0, len(items), batch_size):
            batch = [image.to(self.device) for _, image in items[start : start + batch_size]]
            with torch.no_grad():
                chunks.append(self.model._probs(self.model(batch)).cpu())
        return [source for source, _ in items], torch.cat(chunks)

    def predict(
        self, images: ImageLike | Iterable[ImageLike], top_k: int = 3, batch_size: int = 64
    ) -> list[Prediction]:
        """The ``top_k`` classes of every image, most probable first."""
        check_top_k(top_k, self.class_names)
        sources, probs = self._probabilities(self._images(images), batch_size)
        values, classes = probs.topk(top_k, dim=1)
        return [
            Prediction(source, [self.class_names[c] for c in cs], ps)
            for source, cs, ps in zip(sources, classes.tolist(), values.tolist(), strict=True)
        ]
