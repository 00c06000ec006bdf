"""Callbacks Lightning lacks: prediction files, the test report, TensorBoard images, random states in checkpoints."""

from src.callbacks.dashboard import Dashboard
from src.callbacks.predictions import PredictionWriter
from src.callbacks.report import TestReport
from src.callbacks.rng import RngState

__all__ = ["Dashboard", "PredictionWriter", "RngState", "TestReport"]
