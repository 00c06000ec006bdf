"""Callbacks Lightning lacks: prediction files, the test report, TensorBoard images."""

from src.callbacks.dashboard import Dashboard
from src.callbacks.predictions import PredictionWriter
from src.callbacks.report import TestReport

__all__ = ["Dashboard", "PredictionWriter", "TestReport"]
