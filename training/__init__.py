"""Training runs of the VGG16 transfer model: config, trainer, background launcher and CLI."""
