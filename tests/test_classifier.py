"""The classifier module: losses, metrics named by class, per-layer learning rates, predictions."""

from functools import partial

import pytest
import torch

from src.errors import UserError
from src.models.classifier import ImageClassifier, per_class_accuracy
from src.models.networks import FullyConnected, SimpleCNN

NAMES = ["cat", "dog", "T-shirt/top"]


def make(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(NAMES, (1, 8, 8), **kwargs)


def test_nll_head_gives_log_probabilities_and_same_loss_as_cross_entropy() -> None:
    ce, nll = make(loss="cross_entropy").eval(), make(loss="nll").eval()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    log_probs = nll(x)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(4))
    assert torch.allclose(nll.criterion(log_probs, y), ce.criterion(ce(x), y))


def test_per_class_accuracy_is_named_by_class() -> None:
    model = make()
    logits = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [9.0, 0, 0], [0, 0, 9.0]])
    model.confusion.update(logits, torch.tensor([0, 1, 1, 2]))
    result = {k: v.item() for k, v in per_class_accuracy(model.confusion.compute(), NAMES, "val").items()}
    assert result == {"val/acc_per_class/cat": 1.0, "val/acc_per_class/dog": 0.5, "val/acc_per_class/T-shirt/top": 1.0}


def test_lr_multipliers_make_named_parameter_groups() -> None:
    model = make(
        network=SimpleCNN,
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_multipliers={"features": 0.1},
    )
    optimizer = model.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["features"]["lr"] == pytest.approx(0.01)
    assert groups["default"]["lr"] == pytest.approx(0.1)
    assert groups["features"]["momentum"] == 0.9
    n_features = sum(1 for _ in model.net.features.parameters())
    assert len(groups["features"]["params"]) == n_features
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_scheduler_is_applied_to_the_optimizer() -> None:
    model = make(scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[1], gamma=0.5))
    config = model.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert scheduler.optimizer is config["optimizer"]
    config["optimizer"].step()  # no gradients: a no-op, but the order PyTorch expects
    scheduler.step()
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(0.0005)


def test_unknown_lr_multiplier_prefix_names_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"backbone.*'layers', 'layers.1'"):
        make(network=FullyConnected, lr_multipliers={"backbone": 0.1})


def test_predict_step_returns_probabilities_and_passes_labels_through() -> None:
    model = make(loss="nll").eval()
    x = torch.randn(6, 1, 8, 8)
    out = model.predict_step((x, torch.zeros(6, dtype=torch.long)), 0)
    assert out["probs"].shape == (6, 3)
    assert torch.allclose(out["probs"], model(x).exp())  # probabilities even from the log-softmax head
    assert torch.equal(out["target"], torch.zeros(6, dtype=torch.long))
    assert "target" not in model.predict_step(torch.randn(2, 1, 8, 8), 0)
