"""Several trained models as one network: the fold models of ``src.kfold`` predict as one averaged ensemble, saved as
an ordinary checkpoint (``predict``, ``Predictor`` and ``export`` take it unchanged)."""

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from src.models.preprocess import InputSpec
from src.models.tasks import probabilities

#: Probabilities are kept this far from 0 and 1, so their log (or logit) stays finite.
EPS = 1e-12


class Ensemble(nn.Module):
    """The mean of the members' probabilities, as the logits whose softmax (multi-label: sigmoid) is exactly that mean:
    ``log(mean p)``, or ``logit(mean p)``. Averaging probabilities, not logits, keeps each member's calibration.

    Each member is an ``ImageClassifier`` rebuilt from its checkpoint's hyper-parameters (the weights come with the
    ensemble's ``state_dict``), with its own normalisation inside: the outer model only converts images to [0, 1]
    pixels at the members' channels and size (``input_spec``: mean 0, std 1)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, members: list[str]) -> None:
        """
        Args:
            members: each member's ``hyper_parameters`` (of a checkpoint written by ``python -m src.train fit``) as
                JSON text: as mappings, jsonargparse would read their ``class_path`` entries as classes to resolve.
        """
        super().__init__()
        from src.models.classifier import ImageClassifier  # the classifier builds networks: imported when used

        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(
            ImageClassifier.from_checkpoint({"hyper_parameters": json.loads(h)}, f"ensemble member {i}")
            for i, h in enumerate(members)
        )
        tasks, classes = {m.task for m in self.members}, {len(m.class_names) for m in self.members}
        if len(tasks) > 1 or classes != {num_classes}:
            raise ValueError(f"ensemble members differ: tasks {tasks}, class counts {classes} (expected {num_classes})")
        self.task = tasks.pop()
        spec = self.members[0].input_spec
        self.input_spec = InputSpec(spec.channels, spec.size, [0.0] * spec.channels, [1.0] * spec.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([probabilities(m(x), self.task) for m in self.members]).mean(0).clamp(EPS, 1 - EPS)
        return torch.logit(mean) if self.task == "multilabel" else mean.log()


def ensemble_checkpoint(checkpoints: Sequence[dict[str, Any]], thresholds: torch.Tensor | None = None) -> dict:
    """A template checkpoint of the members' ``Ensemble``: hyper-parameters that rebuild it offline, every member's
    weights; ``thresholds`` (multi-label) become the ensemble's own."""
    import lightning

    from src.models.classifier import ImageClassifier

    members = [{k: v for k, v in c["hyper_parameters"].items() if k != "_instantiator"} for c in checkpoints]
    first = members[0]
    channels = first["input_shape"][0]
    network = {"class_path": f"{__name__}.Ensemble", "init_args": {"members": list(map(json.dumps, members))}}
    hparams = {k: first[k] for k in ("class_names", "input_shape", "task") if k in first} | {"network": network}
    hparams |= {"input_mean": [0.0] * channels, "input_std": [1.0] * channels}
    model = ImageClassifier.from_checkpoint({"hyper_parameters": hparams}, "the ensemble")
    for member, checkpoint in zip(model.net.members, checkpoints, strict=True):
        member.load_state_dict(checkpoint["state_dict"])
    if thresholds is not None:
        model.thresholds.copy_(thresholds)
    return {"state_dict": model.state_dict(), "hyper_parameters": hparams, "epoch": 0, "global_step": 0,
            "pytorch-lightning_version": lightning.__version__}  # fmt: skip
