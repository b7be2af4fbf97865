"""gand: a GAN training daemon."""

__version__ = "0.1.0"
