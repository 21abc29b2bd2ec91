"""Open-Vocabulary SAM in plain PyTorch: segment an object from a point or a box and name it.

from ovsam_model import build_ovsam, list_models, OVSAMPredictor
model = build_ovsam("demo")
predictor = OVSAMPredictor(model)
predictor.set_image(image)
predictor.set_vocabulary(["nucleus", "rod", "ring", "cluster"])
result = predictor.predict(boxes=[x0, y0, x1, y1])
"""

from .build import build_ovsam
from .config import OVSAMConfig, list_models, load_config
from .predictor import OVSAMPredictor, Prediction
from .vocabulary import Vocabulary, list_presets

__version__ = "0.1.0"

__all__ = [
    "OVSAMConfig",
    "OVSAMPredictor",
    "Prediction",
    "Vocabulary",
    "build_ovsam",
    "list_models",
    "list_presets",
    "load_config",
]
