"""Weight initialisation schemes, selectable from YAML (``model.init``)."""

from typing import Literal

from torch import nn

InitScheme = Literal["default", "kaiming", "xavier"]


def init_weights(module: nn.Module, scheme: InitScheme = "default") -> None:
    """Re-initialise every Conv/Linear layer of ``module`` in place; biases to zero.

    ``default`` keeps PyTorch's own initialisation. ``kaiming`` (He) suits ReLU networks, ``xavier`` (Glorot)
    suits tanh/sigmoid ones; both are the classic choices from the tutorials this template grew from.
    """
    if scheme == "default":
        return
    if scheme not in ("kaiming", "xavier"):
        raise ValueError(f"unknown init scheme {scheme!r}: use 'default', 'kaiming' or 'xavier'")
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
