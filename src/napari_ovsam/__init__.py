"""napari plugin: segment and name objects with Open-Vocabulary SAM."""

__version__ = "0.1.0"
