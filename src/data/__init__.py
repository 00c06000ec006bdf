"""LightningDataModules, one module per image source; configs name them by module path."""
