"""The classifier LightningModule and the plain networks it trains."""

from src.models.classifier import ImageClassifier
from src.models.finetuning import TransferFinetuning
from src.models.networks import FullyConnected, LeNet5, ResNet, SimpleCNN
from src.models.transfer import TransferNet

__all__ = ["FullyConnected", "ImageClassifier", "LeNet5", "ResNet", "SimpleCNN", "TransferFinetuning", "TransferNet"]
