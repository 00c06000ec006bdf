"""Transfer learning: a pretrained backbone with its classifier replaced by a new head sized for the data.

The backbone is a torchvision classification model chosen by name, or any network from a checkpoint of this
template (e.g. the CNN trained on Fashion-MNIST). Its last ``nn.Linear`` (the old classifier) is dropped; what
remains is the ``backbone`` that finetuning strategies freeze and unfreeze, followed by a new ``head``.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from src.errors import UserError

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


@dataclass
class InputSpec:
    """What the backbone was trained on: image channels, side length and normalisation statistics."""

    channels: int
    size: int
    mean: Sequence[float]
    std: Sequence[float]


def _drop_last_linear(model: nn.Module) -> None:
    """Replace the last ``nn.Linear`` of ``model`` (its classifier output) by ``Identity``, in place."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())


def _torchvision_spec(backbone: str, weights: torchvision.models.WeightsEnum | None) -> InputSpec:
    """Input size and statistics from the weights' own ``transforms()`` metadata (no download needed)."""
    reference = weights or torchvision.models.get_model_weights(backbone).DEFAULT
    transform = reference.transforms()
    return InputSpec(3, transform.crop_size[0], transform.mean, transform.std)


def _check_backbone(backbone: str) -> None:
    if backbone not in torchvision.models.list_models(torchvision.models):
        raise UserError(
            f"--model.network.backbone {backbone!r} is not a torchvision classification model; e.g. resnet18, "
            "resnet34, resnet50, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0."
        )


def _torchvision_backbone(backbone: str) -> nn.Module:
    _check_backbone(backbone)
    return torchvision.models.get_model(backbone, weights=None)


def _download_weights(backbone: str, name: str) -> tuple[nn.Module, InputSpec]:
    """A torchvision weights name: from the torch hub cache, downloading it there when online."""
    _check_backbone(backbone)
    enum = torchvision.models.get_model_weights(backbone)
    try:
        weights = enum[name]
    except KeyError:
        choices = ", ".join(["DEFAULT", *(member.name for member in enum)])
        raise UserError(f"--model.network.weights {name!r} is not a weights name of {backbone}: {choices}") from None
    model = _torchvision_backbone(backbone)
    try:
        model.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
    except OSError as err:  # URLError is an OSError
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise UserError(
            f"pretrained weights {weights} for {backbone} are not in the torch hub cache ({cached}) and could not "
            f"be downloaded ({type(err).__name__}). Either put a weights file there or pass one with "
            f"--model.network.weights FILE (a torchvision state_dict or a .ckpt of this template), or train "
            "without pretrained weights: --model.network.weights null"
        ) from None
    _drop_last_linear(model)
    return model, _torchvision_spec(backbone, weights)


def _from_template_checkpoint(path: Path, checkpoint: dict) -> tuple[nn.Module, InputSpec]:
    """The network of a checkpoint made by this template (without its classifier layer) and its input spec."""
    hparams = checkpoint["hyper_parameters"]
    network = hparams.get("network")
    init_args = network.get("init_args", {}) if isinstance(network, dict) else {}
    if isinstance(network, dict) and str(network.get("class_path", "")).endswith("TransferNet"):
        if str(init_args.get("weights", "")).endswith(WEIGHT_FILE_SUFFIXES):
            raise UserError(f"{path} was itself built on a weights file; transfer from that original file instead.")
        # Rebuild the architecture without fetching its original weights, then load the trained ones.
        backbone = init_args.get("backbone", "resnet18")
        model = _torchvision_backbone(backbone)
        _drop_last_linear(model)
        prefix = "net.backbone."
        state = checkpoint["state_dict"]
        model.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})
        spec = _torchvision_spec(backbone, None)
        return model, replace(spec, size=init_args.get("input_size") or spec.size)
    from src.models.classifier import ImageClassifier  # imported here: the classifier module imports networks

    model = ImageClassifier.load_from_checkpoint(path, map_location="cpu").net
    _drop_last_linear(model)
    channels, size, _ = hparams["input_shape"]
    return model, InputSpec(channels, size, hparams.get("input_mean", (0.0,)), hparams.get("input_std", (1.0,)))


def _from_file(backbone: str, path: Path) -> tuple[nn.Module, InputSpec]:
    """A local file: a checkpoint of this template, or a torchvision ``state_dict`` of ``backbone``."""
    if not path.is_file():
        raise UserError(f"--model.network.weights {str(path)!r}: no such file. Give a .pth/.ckpt file, or null.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"--model.network.weights {str(path)!r} is not a readable weights file ({type(err).__name__})"
        ) from None
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint and "hyper_parameters" in checkpoint:
        return _from_template_checkpoint(path, checkpoint)
    model = _torchvision_backbone(backbone)
    missing, unexpected = model.load_state_dict(checkpoint, strict=False)
    if missing or unexpected:
        raise UserError(
            f"--model.network.weights {str(path)!r} does not fit {backbone}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}. Pass the backbone it was saved from with --model.network.backbone."
        )
    _drop_last_linear(model)
    return model, _torchvision_spec(backbone, None)


class TransferNet(nn.Module):
    """Pretrained ``backbone`` + new ``head`` (dropout, linear); adapts any image to what the backbone expects.

    Inputs are [0, 1] images of any size and channel count: they are converted to the backbone's channels (grey
    repeated to RGB, RGB averaged to grey), resized to ``input_size`` and normalised with the statistics the
    backbone was trained with. The classifier module therefore skips its own normalisation.
    """

    normalizes_input = True

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        backbone: str = "resnet18",
        weights: str | None = "DEFAULT",
        input_size: int | None = None,
        dropout: float = 0.2,
    ) -> None:
        """
        Args:
            input_shape: (channels, height, width) of the data's images (from the data module).
            num_classes: size of the new head (from the data module).
            backbone: torchvision model name (resnet18/34/50, mobilenet_v3_small/large, efficientnet_b0, ...).
            weights: a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``, ...; downloaded into the torch hub
                cache when online), a local file (a torchvision ``state_dict`` of ``backbone``, or a ``.ckpt`` of
                this template, whose network then becomes the backbone), or ``null`` for random initialisation.
            input_size: side length the images are resized to; ``None`` = the size the weights were trained at
                (224 for ImageNet weights). Smaller is much faster on a CPU, e.g. 64.
            dropout: dropout before the new linear head.
        """
        super().__init__()
        _check_backbone(backbone)
        if weights is None:
            model, spec = _torchvision_backbone(backbone), _torchvision_spec(backbone, None)
            _drop_last_linear(model)
        elif weights.endswith(WEIGHT_FILE_SUFFIXES) or os.sep in weights:
            model, spec = _from_file(backbone, Path(weights))
        else:
            model, spec = _download_weights(backbone, weights)
        self.backbone = model
        self.channels = spec.channels
        self.size = input_size or spec.size
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)
        with torch.no_grad():
            was_training = model.training
            features = model.eval()(self._adapt(torch.zeros(1, *input_shape))).shape[1]
            model.train(was_training)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any shape -> what the backbone was trained on."""
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self._adapt(x)))
