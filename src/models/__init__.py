"""The classifier LightningModule, its networks and finetuning; configs name them by full path."""
