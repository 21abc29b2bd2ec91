"""napari plugin: segment and name objects with Open-Vocabulary SAM."""

from ovsam_model import __version__  # one version string for the distribution (pyproject reads it there)

__all__ = ["__version__"]
