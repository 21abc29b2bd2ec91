"""Model configurations as data: one JSON file per variant, parsed into dataclasses.

Every architecture number lives here or in ``configs/*.json``; modules receive finished numbers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clip_configs import CLIP_CONFIG_DIR, clip_embed_dim

__all__ = ["CLIP_CONFIG_DIR", "CONFIG_DIR", "OVSAMConfig", "list_models", "load_config"]

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ClipConfig:
    """The CLIP model whose image trunk encodes the image and whose text tower encodes the vocabulary."""

    model_name: str = "RN50x16"  # open_clip architecture (built-in, or a JSON in configs/clip/)
    pretrained: str | None = "openai"  # open_clip pretrained tag or local file; None = random init
    trunk: str = "modified_resnet"  # "modified_resnet" (OpenAI RN*) or "timm" (ConvNeXt through timm)
    channels: tuple[int, int, int, int] = (384, 768, 1536, 3072)  # C2..C5 at strides 4/8/16/32
    frozen: bool = True  # frozen trunk in eval mode (False only for the from-scratch demo model)
    region_pool_size: int = 12  # RoIAlign size before the attention pool (= CLIP image size / 32)


@dataclass
class AdapterConfig:
    """SAM2CLIP: multi-scale CLIP features -> SAM-style image embedding at stride 16 (or 8)."""

    embed_dim: int = 1280  # width of the SAM ViT blocks
    depth: int = 5
    num_heads: int = 16
    mlp_ratio: float = 4.0
    window_size: int = 14  # window attention size for non-global blocks
    global_attn_indexes: tuple[int, ...] = (4,)
    out_chans: int = 256  # = prompt embedding dim of the decoder
    # Embedding stride: 16 as in SAM; 8 doubles the grid (and the decoder's 4x-upsampled masks) for models
    # at small input sizes whose objects are a few embedding cells wide (the demo model).
    stride: int = 16


@dataclass
class DecoderConfig:
    """segment_anything's MaskDecoder + TwoWayTransformer."""

    num_multimask_outputs: int = 3  # 3 = SAM multimask tokens + IoU head; 0 = the released single token
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    label_token: bool = False  # the released head's label token + MLP (its output is multiplied by zero)


@dataclass
class HeadConfig:
    """CLIP2SAM: FPN + RoIAlign + conv + mean -> region embedding scored against text embeddings."""

    fpn_channels: int = 256
    roi_output_size: int = 12  # 12 for COCO; 7 for the LVIS eval config and the demo
    finest_scale: float = 56.0  # mmdet level rule: floor(log2(sqrt(w*h) / finest_scale)), clamped
    logit_scale: float = 100.0  # fixed, exp(4.6052)
    # Name a box prompt from the user's own box (what the head was trained on: GT boxes) rather than from
    # the box of its predicted mask; point prompts always use the predicted mask's box.
    name_box_prompts_by_box: bool = True


@dataclass
class FusionConfig:
    """Geometric-mean fusion of the head's and the frozen CLIP's class probabilities."""

    enabled: bool = True
    alpha_seen: float = 0.1  # weight of the frozen-CLIP probability for classes seen in training
    beta_unseen: float = 0.9  # ... and for the others


@dataclass
class OVSAMConfig:
    """One OV-SAM variant: every number its builder needs, read from ``configs/<name>.json``.

    Images are resized so that their longest side is ``image_size`` and padded to a square of that side; the
    image embedding is a grid of ``embedding_size`` = ``image_size / adapter.stride`` cells; region and text
    embeddings have ``embed_dim`` features (the CLIP architecture's joint embedding size). ``weights`` names
    the pretrained sources (``ovsam_model.hub``) the variant loads by default.
    """

    name: str = "ovsam_rn50x16"
    image_size: int = 1024  # longest side after resizing; the padded square input size
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    clip: ClipConfig = field(default_factory=ClipConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    weights: dict[str, str] = field(default_factory=dict)  # named pretrained sources, see ovsam_model.hub
    description: str = ""

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (``image_size / adapter.stride``)."""
        return self.image_size // self.adapter.stride

    @property
    def embed_dim(self) -> int:
        """Dimension shared by region embeddings and text embeddings (the CLIP embedding size)."""
        return clip_embed_dim(self.clip.model_name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OVSAMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown model config keys {sorted(unknown)}; known keys are {sorted(known)}.")
        parts = {
            "clip": ClipConfig,
            "adapter": AdapterConfig,
            "decoder": DecoderConfig,
            "head": HeadConfig,
            "fusion": FusionConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts and isinstance(value, dict):
                kwargs[key] = _dataclass_from_dict(parts[key], value, key)
            elif key in ("pixel_mean", "pixel_std"):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _dataclass_from_dict(kind: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"Unknown keys {sorted(unknown)} in model config section '{where}'.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return kind(**values)


def list_models() -> list[str]:
    """Names of the bundled model configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_config: str | Path | dict[str, Any] | OVSAMConfig) -> OVSAMConfig:
    """Resolve a config name (``tiny``, ``ovsam_rn50x16``, ...), a JSON path, a dict, or a config."""
    if isinstance(name_or_config, OVSAMConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return OVSAMConfig.from_dict(name_or_config)
    path = Path(name_or_config)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_config}.json"
    if not path.is_file():
        raise ValueError(f"Unknown model '{name_or_config}'. Available models: {', '.join(list_models())}.")
    data = json.loads(path.read_text())
    data.setdefault("name", path.stem)
    return OVSAMConfig.from_dict(data)
