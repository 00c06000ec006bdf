"""Transfer learning: a pretrained backbone with its classifier replaced by a new head sized for the data.

The backbone is a torchvision classification model chosen by name, or any network from a checkpoint of this
template (e.g. the CNN trained on Fashion-MNIST). The old classifier is dropped (torchvision models and FC nets:
the last ``nn.Linear``; CNNs of this template: everything after their convolutional ``features``); what remains is
the ``backbone`` that finetuning strategies freeze and unfreeze, followed by a new ``head``.
"""

import copy
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from jsonargparse import ArgumentParser
from torch import nn

from src.errors import UserError
from src.models.networks import NetworkFactory
from src.models.preprocess import InputSpec

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _drop_last_linear(model: nn.Module) -> None:
    """Replace the last ``nn.Linear`` of ``model`` (its classifier output) by ``Identity``, in place."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())


def _torchvision_spec(backbone: str, weights: torchvision.models.WeightsEnum | None) -> InputSpec:
    """Input size and statistics from the weights' own ``transforms()`` metadata (no download needed)."""
    reference = weights or torchvision.models.get_model_weights(backbone).DEFAULT
    transform = reference.transforms()
    return InputSpec(3, (transform.crop_size[0],) * 2, transform.mean, transform.std)


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


#: The hyper-parameters of a template checkpoint that rebuild its network (no weights, no file).
SOURCE_KEYS = ("network", "input_shape", "class_names", "input_mean", "input_std")


def _template_backbone(source: dict, state_dict: dict | None = None) -> tuple[nn.Module, InputSpec]:
    """The network described by a template checkpoint's hyper-parameters, without its classifier layer, and its
    input spec; its trained weights are loaded from ``state_dict`` when given."""
    network = copy.deepcopy(source["network"])
    init_args = network.get("init_args", {})
    if str(network.get("class_path", "")).endswith("TransferNet") and init_args.get("source") is None:
        if str(init_args.get("weights") or "").endswith(WEIGHT_FILE_SUFFIXES):
            raise UserError("that checkpoint was itself built on a weights file; transfer from that file instead.")
        init_args["weights"] = None  # the trained weights come from the checkpoint, not a download
    # Rebuild the network exactly as the CLI did (same class, same arguments), then load its trained weights.
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--network", type=NetworkFactory)
    factory = parser.instantiate_classes(parser.parse_object({"network": network})).network
    net = factory(tuple(source["input_shape"]), len(source["class_names"]))
    if state_dict is not None:
        net.load_state_dict({k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")})
    if isinstance(getattr(net, "input_spec", None), InputSpec):  # a TransferNet: its backbone and input spec
        return net.backbone, net.input_spec
    channels, height, width = source["input_shape"]
    if isinstance(getattr(net, "features", None), nn.Module):
        # A CNN's convolutional features transfer far better than its class-specific hidden layers
        # (measured: a linear probe on MNIST reaches 0.96 from a Fashion-MNIST CNN's conv features, 0.76 from its FC).
        net = nn.Sequential(OrderedDict(features=net.features, flatten=nn.Flatten()))
    else:
        _drop_last_linear(net)
    return net, InputSpec(channels, (height, width), source.get("input_mean", (0.0,)), source.get("input_std", (1.0,)))


def _from_file(backbone: str, path: Path) -> tuple[nn.Module, InputSpec, dict | None]:
    """A local file: a checkpoint of this template (also returned: the source description that rebuilds its
    architecture without the file), or a torchvision ``state_dict`` of ``backbone``."""
    if not path.is_file():
        raise UserError(f"--model.network.weights {str(path)!r}: no such file. Give a .pth/.ckpt file, or null.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"--model.network.weights {str(path)!r} is not a readable weights file ({type(err).__name__})"
        ) from None
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint and "hyper_parameters" in checkpoint:
        source = {k: checkpoint["hyper_parameters"][k] for k in SOURCE_KEYS if k in checkpoint["hyper_parameters"]}
        return (*_template_backbone(source, checkpoint["state_dict"]), source)
    model = _torchvision_backbone(backbone)
    missing, unexpected = model.load_state_dict(checkpoint, strict=False)
    if missing or unexpected:
        raise UserError(
            f"--model.network.weights {str(path)!r} does not fit {backbone}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}. Pass the backbone it was saved from with --model.network.backbone."
        )
    _drop_last_linear(model)
    return model, _torchvision_spec(backbone, None), None


class TransferNet(nn.Module):
    """Pretrained ``backbone`` + new ``head`` (dropout, linear).

    ``input_spec`` says what the backbone was trained on (channels, size, statistics); the classifier's
    preprocessing converts any image to it (grey repeated to RGB, resized to ``input_size``, normalised).
    """

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
            input_shape: (channels, height, width) of the data's images (from the data module).
            num_classes: size of the new head (from the data module).
            backbone: torchvision model name (resnet18/34/50, mobilenet_v3_small/large, efficientnet_b0, ...).
            weights: a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``, ...; downloaded into the torch hub
                cache when online), a local file (a torchvision ``state_dict`` of ``backbone``, or a ``.ckpt`` of
                this template, whose network then becomes the backbone), or ``null`` for random initialisation.
            input_size: side length the images are resized to; ``None`` = the size the weights were trained at
                (224 for ImageNet weights). Smaller is much faster on a CPU, e.g. 64.
            dropout: dropout before the new linear head.
            source: set by the template, not by you: the network of the template checkpoint the backbone came
                from, saved in this model's checkpoints so they rebuild it without that file.
        """
        super().__init__()
        _check_backbone(backbone)
        if weights is None and source is not None:  # restoring: the architecture only, weights come later
            model, spec = _template_backbone(source)
        elif weights is None:
            model, spec = _torchvision_backbone(backbone), _torchvision_spec(backbone, None)
            _drop_last_linear(model)
        elif weights.endswith(WEIGHT_FILE_SUFFIXES) or os.sep in weights:
            model, spec, source = _from_file(backbone, Path(weights))
        else:
            model, spec = _download_weights(backbone, weights)
        self.backbone = model
        self.source = source
        self.input_spec = InputSpec(spec.channels, (input_size,) * 2 if input_size else spec.size, spec.mean, spec.std)
        with torch.no_grad():
            was_training = model.training
            features = model.eval()(torch.zeros(1, spec.channels, *self.input_spec.size)).shape[1]
            model.train(was_training)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def restore_args(self) -> dict:
        """Init arguments that rebuild this architecture without fetching or reading any weights: what a
        checkpoint stores, since it holds every weight itself."""
        return {"weights": None, "source": self.source, "input_size": self.input_spec.size[0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
