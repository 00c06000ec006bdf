"""PyTorch Lightning image-classification template."""
