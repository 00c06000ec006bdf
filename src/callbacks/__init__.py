"""Callbacks Lightning lacks: prediction files, the test report, TensorBoard images, random states."""
