"""The two combined SAM + CLIP baselines of the OV-SAM paper (Fig. 2 (a), (b); Table 1), as predictors.

Both segment with a real ``segment_anything`` SAM (through its ``SamPredictor``) and name each mask with a
separate CLIP model, scored like OV-SAM: 100 x cosine with the vocabulary's text embeddings (max over
synonyms), softmax over the K classes (no background column, no fusion: there is nothing to fuse).

- ``ImageCropBaseline`` (image crop): the box of the best mask, enlarged ``crop_scale`` times and made square
  around its centre, is cut from the original image (outside the image: CLIP's mean colour), resized to
  CLIP's input size with CLIP's own normalisation and encoded by the CLIP image tower.
- ``FeatureCropBaseline`` (feature crop): the whole image is encoded once by the CLIP trunk at SAM's input
  resolution (1024 for the real models), normalised with CLIP's own mean/std (OV-SAM's frozen branch uses SAM's); C5 is
  RoIAligned on the box of the mask, the bins outside the mask are zeroed (mask cropping of the features,
  ``mask_features=True``), and CLIP's own head (attention pool for ModifiedResNet) projects the result.

Both have the interface of ``OVSAMPredictor``: ``set_image``, ``set_vocabulary``, ``predict`` -> ``Prediction``
(points (x, y) and boxes XYXY in original-image pixels; masks at the original size), ``get_image_embedding`` /
``set_image_embedding``. Prompts are validated by the same ``normalize_prompts``, so bad input raises the same
errors.

Modules: ``common`` (the shared predictor part), ``image_crop``, ``feature_crop``, ``build`` (SAM and CLIP
models, ``build_baseline``).
"""

from .build import BASELINE_KINDS, SAM_ARCHS, build_baseline, build_clip, build_sam, build_tiny_sam
from .common import LOGIT_SCALE, SamClipBaseline
from .feature_crop import FeatureCropBaseline, clip_trunk_kind
from .image_crop import DEFAULT_CROP_SCALE, ImageCropBaseline

__all__ = [
    "BASELINE_KINDS",
    "DEFAULT_CROP_SCALE",
    "LOGIT_SCALE",
    "SAM_ARCHS",
    "FeatureCropBaseline",
    "ImageCropBaseline",
    "SamClipBaseline",
    "build_baseline",
    "build_clip",
    "build_sam",
    "build_tiny_sam",
    "clip_trunk_kind",
]
