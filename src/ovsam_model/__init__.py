"""Open-Vocabulary SAM in plain PyTorch: segment an object from a point or a box and name it.

from ovsam_model import build_ovsam, list_models, OVSAMPredictor
model = build_ovsam("demo")
predictor = OVSAMPredictor(model)
predictor.set_image(image)
predictor.set_vocabulary(["nucleus", "rod", "ring", "cluster"])
result = predictor.predict(boxes=[x0, y0, x1, y1])
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr

__version__ = "0.1.0"  # the one version string: pyproject.toml reads it, napari_ovsam re-exports it

# The public names load their modules on first use: importing the package (e.g. for a napari plugin's
# manifest, or a submodule) does not pay for torch, open_clip and torchvision up front.
_EXPORTS = {
    "AutomaticAnnotator": "automatic",
    "CompactMasks": "prediction",
    "Instances": "automatic",
    "OVSAMConfig": "config",
    "OVSAMPredictor": "predictor",
    "Prediction": "prediction",
    "TileSpec": "tiling",
    "Vocabulary": "vocabulary",
    "build_ovsam": "build",
    "list_models": "config",
    "list_presets": "vocabulary",
    "load_config": "config",
    "name_labels": "automatic",
    "paint_labels": "prediction",
}
__all__ = [
    "AutomaticAnnotator",
    "CompactMasks",
    "Instances",
    "OVSAMConfig",
    "OVSAMPredictor",
    "Prediction",
    "TileSpec",
    "Vocabulary",
    "build_ovsam",
    "list_models",
    "list_presets",
    "load_config",
    "name_labels",
    "paint_labels",
]

if TYPE_CHECKING:
    from .automatic import AutomaticAnnotator, Instances, name_labels
    from .build import build_ovsam
    from .config import OVSAMConfig, list_models, load_config
    from .prediction import CompactMasks, Prediction, paint_labels
    from .predictor import OVSAMPredictor
    from .tiling import TileSpec
    from .vocabulary import Vocabulary, list_presets

__getattr__ = lazy_getattr(__name__, _EXPORTS)
