"""The classifier LightningModule and the plain networks it trains."""

from src.models.classifier import ImageClassifier
from src.models.networks import FullyConnected, LeNet5, SimpleCNN

__all__ = ["FullyConnected", "ImageClassifier", "LeNet5", "SimpleCNN"]
