"""Open-Vocabulary SAM in plain PyTorch: segment an object from a point or a box and name it."""

__version__ = "0.1.0"
