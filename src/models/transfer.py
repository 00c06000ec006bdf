"""Transfer learning: a pretrained ``backbone``, from torchvision or a checkpoint of this template, with a new ``head``
sized for the data."""

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from src.checkpoint_io import read_checkpoint
from src.errors import UserError
from src.models.classifier import ImageClassifier
from src.models.networks import flat_size
from src.models.preprocess import InputSpec

#: The hyper-parameters of a template checkpoint that rebuild its network (no weights, no file).
SOURCE_KEYS = ("network", "input_shape", "class_names", "input_mean", "input_std")


def _drop_last_linear(model: nn.Module) -> None:
    """Replace the last ``nn.Linear`` of ``model`` (its classifier output) by ``Identity``, in place."""
    parent, _, child = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1].rpartition(".")
    setattr(model.get_submodule(parent), child, nn.Identity())


def _torchvision(backbone: str, weights: str | dict | None, path: str = "") -> tuple[nn.Module, InputSpec]:
    """``backbone`` without its classifier, with ``weights`` (a name, a state dict read from ``path``, or none)."""
    enum, named = torchvision.models.get_model_weights(backbone), None
    if isinstance(weights, str):
        if weights not in enum.__members__:
            choices = ", ".join(["DEFAULT", *(member.name for member in enum)])
            raise UserError(f"--model.network.weights {weights!r} is not a weights name of {backbone}: {choices}")
        named = enum[weights]
        try:
            weights = named.get_state_dict(progress=False, check_hash=True)
        except OSError as err:  # URLError is an OSError
            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(named.url)
            raise UserError(
                f"pretrained weights {named} for {backbone} are not in the torch hub cache ({cached}) and could not "
                f"be downloaded ({type(err).__name__}): put the file there, pass one with --model.network.weights FILE "
                "(a torchvision state_dict or a template .ckpt), or train from scratch: --model.network.weights null"
            ) from None
    model = torchvision.models.get_model(backbone, weights=None)
    missing, unexpected = model.load_state_dict(weights, strict=False) if weights is not None else ([], [])
    if missing or unexpected:
        raise UserError(
            f"--model.network.weights {path!r} does not fit {backbone}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}. Pass the backbone it was saved from with --model.network.backbone."
        )
    _drop_last_linear(model)
    transform = (named or enum.DEFAULT).transforms()
    return model, InputSpec(3, (transform.crop_size[0],) * 2, transform.mean, transform.std)


def _template_backbone(checkpoint: dict, label: str) -> tuple[nn.Module, InputSpec]:
    """The reusable part of a template checkpoint's network (trained, if it has weights): its ``backbone``, else its
    ``features`` (they transfer better than class-specific hidden layers), else all but its last ``nn.Linear``."""
    model = ImageClassifier.from_checkpoint(checkpoint, label=label, compile=False)
    net = model.net
    if isinstance(getattr(net, "backbone", None), nn.Module):
        return net.backbone, model.input_spec
    if isinstance(getattr(net, "features", None), nn.Module):
        return nn.Sequential(OrderedDict(features=net.features, flatten=nn.Flatten())), model.input_spec
    _drop_last_linear(net)
    return net, model.input_spec


class TransferNet(nn.Module):
    """Pretrained ``backbone`` + new ``head`` (dropout, linear). ``input_spec`` is what the backbone was trained on;
    the classifier's preprocessing converts any image to it (grey repeated to RGB, resized, normalised)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        backbone: str = "resnet18",
        weights: str | None = "DEFAULT",
        input_size: int | None = None,
        dropout: float = 0.2,
        source: dict | None = None,
    ) -> None:
        """
        Args:
            backbone: torchvision model name (resnet18/34/50, mobilenet_v3_small/large, efficientnet_b0, ...).
            weights: a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``, ...: hub cache, else downloaded), a
                file (a ``state_dict`` of ``backbone``, or a template ``.ckpt``: its network), or null (random init).
            input_size: side length images are resized to; ``None``: the weights' own (224 for ImageNet weights).
            dropout: dropout before the new linear head.
            source: set by the template: the network of the checkpoint the backbone came from (rebuilt without it).
        """
        super().__init__()
        if backbone not in torchvision.models.list_models(torchvision.models):
            raise UserError(
                f"--model.network.backbone {backbone!r} is not a torchvision classification model; e.g. resnet18, "
                "resnet34, resnet50, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0."
            )
        if weights is None and source is not None:  # restoring: the architecture only, the weights come later
            model, spec = _template_backbone({"hyper_parameters": source}, "--model.network.source")
        elif weights is not None and (weights.endswith((".pth", ".pt", ".ckpt", ".bin")) or os.sep in weights):
            checkpoint = read_checkpoint(weights, "--model.network.weights", template=False)
            if {"state_dict", "hyper_parameters"} <= checkpoint.keys():  # a checkpoint of this template
                source = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in SOURCE_KEYS}
                model, spec = _template_backbone(checkpoint, f"--model.network.weights {weights}")
            else:
                model, spec = _torchvision(backbone, checkpoint, weights)
        else:
            model, spec = _torchvision(backbone, weights)
        self.backbone, self.source = model, source
        self.input_spec = InputSpec(spec.channels, (input_size,) * 2 if input_size else spec.size, spec.mean, spec.std)
        features = flat_size(model, (spec.channels, *self.input_spec.size))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def restore_args(self) -> dict:
        """Init arguments that rebuild this architecture without fetching or reading weights (for checkpoints)."""
        return {"weights": None, "source": self.source, "input_size": self.input_spec.size[0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
