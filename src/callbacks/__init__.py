"""Callbacks Lightning lacks."""

from src.callbacks.predictions import PredictionWriter

__all__ = ["PredictionWriter"]
