"""The Python API: ``Predictor.from_checkpoint(path)`` (or ``.from_onnx(folder)``) ``.predict(images, top_k=3)``.
Images: paths (a file, a folder searched recursively, a glob), PIL images, NumPy arrays or tensors (H x W, H x W x C
or C x H x W; 4-D: a batch; uint8, uint16 or [0, 1] floats) of any size and channel count."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.callbacks.evaluation import check_top_k
from src.data.arrays import channels_first
from src.data.files import find_images, pil_to_uint8, read_image
from src.models.classifier import ImageClassifier, probabilities

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
Images = ImageLike | Iterable[ImageLike]


@dataclass
class Prediction:
    """The ``top_k`` most probable classes of one image, most probable first; for a multi-label model, every label
    at or above its threshold (possibly none), most probable first."""

    source: str
    classes: list[str]
    probs: list[float]

    @property
    def label(self) -> str:
        """The most probable class; multi-label: the label set, ``a|b`` (empty: none)."""
        return "|".join(self.classes) if self.multilabel else self.classes[0]

    multilabel: bool = False


class Predictor:
    """Classifies images with a trained model: ``predict(images, top_k)`` -> class names and probabilities."""

    def __init__(self, model: ImageClassifier, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.class_names: list[str] = list(model.class_names)
        #: ``multiclass`` or ``multilabel`` (then ``model.thresholds`` decide each label), as the model was trained.
        self.task = getattr(model, "task", "multiclass")

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device | None = None) -> "Predictor":
        return cls(ImageClassifier.from_checkpoint(checkpoint), device)

    @classmethod
    def from_onnx(cls, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> "Predictor":
        """An ONNX export (``model.onnx`` or its folder) run by onnxruntime (``.[export]``), without the checkpoint."""
        from src.export import OnnxModel  # onnxruntime only when asked for

        return cls(OnnxModel(path, providers), device="cpu")  # type: ignore[arg-type]  # duck-typed: see OnnxModel

    def _images(self, images: Images, name: str = "") -> list[tuple[str, torch.Tensor]]:
        """(source, (C, H, W) tensor) per image, in order; files and PIL images decoded exactly as the CLI does."""
        channels, size = self.model.input_spec.channels, self.model.input_spec.size
        if isinstance(images, (str, Path)):
            return [(str(path), read_image(path, channels, size)) for path in find_images(images)]
        if isinstance(images, Image.Image):
            return [(f"<image{name}>", pil_to_uint8(images, channels, size))]
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if isinstance(images, torch.Tensor) and images.dim() != 4:  # 4-D: a batch, like a list
            image = channels_first(images[None], range(1, 5))  # (H, W), (H, W, C) or (C, H, W) as a batch of one
            if image is None:
                raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W), got shape {tuple(images.shape)}")
            scale = 65535 if image.dtype in (torch.uint16, torch.int32) else 1  # uint8 passes, floats are [0, 1]
            return [(f"<array{name}>", image[0] if image.dtype == torch.uint8 else image[0].float() / scale)]
        if not isinstance(images, Iterable):
            raise TypeError(f"cannot classify a {type(images).__name__}: give paths, PIL images, arrays or tensors")
        return [item for i, image in enumerate(images) for item in self._images(image, f"{name}[{i}]")]

    def probabilities(self, images: Images, batch_size: int = 64) -> torch.Tensor:
        """(N, num_classes) class probabilities, in input order (folders expanded in sorted order)."""
        tensors = [tensor for _, tensor in self._images(images)]
        with torch.no_grad():
            batches = [tensors[i : i + batch_size] for i in range(0, len(tensors), batch_size)]
            out = torch.cat([self.model([x.to(self.device) for x in batch]) for batch in batches])
            return probabilities(out, self.task).cpu()

    def predict(self, images: Images, top_k: int = 3, batch_size: int = 64) -> list[Prediction]:
        """The ``top_k`` classes of every image, most probable first (multi-label: the labels above threshold)."""
        check_top_k(top_k, self.class_names)
        sources, tensors = zip(*self._images(images), strict=True)  # decoded once: tensors pass _images unchanged
        probs = self.probabilities(list(tensors), batch_size)
        if self.task == "multilabel":
            on = [(p.sort(descending=True), p >= self.model.thresholds.cpu()) for p in probs]
            return [
                Prediction(s, [self.class_names[c] for c in i[keep[i]].tolist()], v[keep[i]].tolist(), True)
                for s, ((v, i), keep) in zip(sources, on, strict=True)
            ]
        values, classes = probs.topk(top_k, dim=1)
        return [
            Prediction(source, [self.class_names[c] for c in cs], ps)
            for source, cs, ps in zip(sources, classes.tolist(), values.tolist(), strict=True)
        ]
