"""The two combined SAM + CLIP baselines of the OV-SAM paper (Fig. 2 (a), (b); Table 1), as predictors.

Both segment with a real ``segment_anything`` SAM (through its ``SamPredictor``) and name each mask with a
separate CLIP model, scored like OV-SAM: 100 x cosine with the vocabulary's text embeddings (max over
synonyms), softmax over the K classes (no background column, no fusion: there is nothing to fuse).

- ``ImageCropBaseline`` (image crop): the box of the best mask, enlarged ``crop_scale`` times and made square
  around its centre, is cut from the original image (outside the image: CLIP's mean colour), resized to
  CLIP's input size with CLIP's own normalisation and encoded by the CLIP image tower.
- ``FeatureCropBaseline`` (feature crop): the whole image is encoded once by the CLIP trunk at SAM's input
  resolution (1024 for the real models; CLIP's mean/std, unlike OV-SAM's frozen branch, bug B7); C5 is
  RoIAligned on the box of the mask, the bins outside the mask are zeroed (mask cropping of the features,
  ``mask_features=True``), and CLIP's own head (attention pool for ModifiedResNet) projects the result.

Both have the interface of ``OVSAMPredictor``: ``set_image``, ``set_vocabulary``, ``predict`` -> ``Prediction``
(points (x, y) and boxes XYXY in original-image pixels; masks at the original size), ``get_image_embedding`` /
``set_image_embedding``. Prompts are validated by the same ``normalize_prompts``, so bad input raises the same
errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn
from torchvision.ops import roi_align

from .image import to_model_rgb
from .modeling.clip2sam import class_logits, masks_to_boxes
from .modeling.clip_trunk import CLIPTrunk
from .postprocess import clip_masks_to_boxes, keep_prompted_components
from .predictor import NO_IMAGE, NO_VOCABULARY, Prediction, vocabulary_embeddings
from .prompts import NumpyPrompts, PromptSet, normalize_prompts

BASELINE_KINDS = ("image_crop", "feature_crop")
SAM_ARCHS = ("vit_h", "vit_l", "vit_b", "tiny")
LOGIT_SCALE = 100.0  # as OV-SAM's classifier (CLIP's own learned scale is ~100 too)
DEFAULT_CROP_SCALE = 1.2  # context around the mask box for the image crop (1.0 = the tight box)
DEFAULT_CHUNK_SIZE = 32
_EMPTY_MASK_HALF_BOX = 16.0  # half side (in a 1024-px frame) of the region named when a mask is empty
_CLIP_STRIDE = 32


def build_tiny_sam(image_size: int = 128) -> Sam:
    """A ~60k-parameter random ``Sam`` (ViT 2 blocks x 32 channels, 32-d prompts) for tests and CI."""
    embed = 32
    grid = image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=16,
            embed_dim=embed,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=embed,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=embed,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed, mlp_dim=64, num_heads=2),
            transformer_dim=embed,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    ).eval()


class SamClipBaseline:
    """Shared part of the baselines: SAM masks, the vocabulary, scoring and the ``Prediction``.

    Args:
        sam: a ``segment_anything`` ``Sam`` (weights loaded).
        clip_model: an open_clip ``CLIP`` (image and text towers).
        tokenizer: its open_clip tokenizer.
        clip_name: stable name of pretrained CLIP weights ("RN50x16/openai"), keying the text-embedding cache;
            None hashes the text tower instead.
        chunk_size: prompts decoded at once (full-size masks are computed per chunk).
        clean_masks: clean SAM's masks by their prompts as ``OVSAMPredictor`` does (``ovsam_model.postprocess``:
            a click keeps the parts of its mask that hold it, a box prompt's mask is clipped to the box), so that
            the methods are compared on the same footing; False keeps SAM's masks as they are.
    """

    def __init__(
        self,
        sam: Sam,
        clip_model: nn.Module,
        tokenizer,
        *,
        clip_name: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        clean_masks: bool = True,
    ) -> None:
        from .text import TextEncoder

        self.sam = sam.eval()
        self.sam_predictor = SamPredictor(self.sam)
        self.clip_model: Any = clip_model.eval().requires_grad_(False)
        self.text_encoder = TextEncoder(clip_model, tokenizer, name=clip_name)
        self.chunk_size = chunk_size
        self.clean_masks = clean_masks
        cfg = open_clip.get_model_preprocess_cfg(clip_model)
        self.clip_mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(3, 1, 1)
        self.clip_std = torch.tensor(cfg["std"], dtype=torch.float32).view(3, 1, 1)
        size = cfg["size"]
        self.clip_input_size = int(size if isinstance(size, int) else size[0])
        self.clip_interpolation = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
        self.vocabulary: Any = None
        self.text_embeddings: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def original_size(self) -> tuple[int, int] | None:
        size = self.sam_predictor.original_size
        return None if size is None else (int(size[0]), int(size[1]))

    @property
    def input_size(self) -> tuple[int, int] | None:
        size = self.sam_predictor.input_size
        return None if size is None else (int(size[0]), int(size[1]))

    @property
    def is_image_set(self) -> bool:
        return bool(self.sam_predictor.is_image_set)

    # ------------------------------------------------------------------ image
    @torch.no_grad()
    def set_image(self, image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> None:
        """Encode an image for SAM and for CLIP (contrast rule: ``ovsam_model.image``).

        image: (H, W) or (H, W, C), any dtype. SAM sees it resized so its longest side is SAM's input size.
        """
        rgb = torch.from_numpy(to_model_rgb(image, contrast_limits)).permute(2, 0, 1)  # [3, H, W] 0..255
        h, w = rgb.shape[1:]
        long_side = self.sam.image_encoder.img_size
        size = ResizeLongestSide.get_preprocess_shape(h, w, long_side)
        # Not ResizeLongestSide.apply_image_torch: it reads the size from the batch and channel axes.
        resized = F.interpolate(rgb[None], size, mode="bilinear", align_corners=False, antialias=True)
        self.sam_predictor.set_torch_image(resized.clamp(0, 255).to(self.device), (int(h), int(w)))
        self._set_clip_image(rgb)

    def reset_image(self) -> None:
        self.sam_predictor.reset_image()
        self._reset_clip_image()

    def get_image_embedding(self) -> dict[str, Any]:
        """The cached state: SAM's ``embedding`` (C, g, g), the CLIP-side arrays of the baseline, and the
        ``original_size`` / ``input_size`` tuples; ``set_image_embedding`` restores it."""
        self._require_image()
        state: dict[str, Any] = {"embedding": self.sam_predictor.features[0].float().cpu().numpy()}
        state.update(self._clip_state())
        state["original_size"] = self.original_size
        state["input_size"] = self.input_size
        return state

    def set_image_embedding(self, state: dict[str, Any]) -> None:
        """Restore a state from ``get_image_embedding`` of the same baseline."""
        embedding = torch.as_tensor(np.asarray(state["embedding"]), dtype=torch.float32, device=self.device)
        grid = self.sam.prompt_encoder.image_embedding_size
        if embedding.shape != (self.sam.prompt_encoder.embed_dim, *grid):
            raise ValueError(
                f"This image embedding {tuple(embedding.shape)} does not fit this SAM; recompute it."
            )
        predictor = self.sam_predictor
        predictor.reset_image()
        predictor.features = embedding[None]
        predictor.original_size = tuple(state["original_size"])
        predictor.input_size = tuple(state["input_size"])
        predictor.is_image_set = True
        self._set_clip_state(state)

    # -------------------------------------------------------------- vocabulary
    def set_vocabulary(
        self,
        vocabulary,
        *,
        seen: Sequence[bool] | None = None,
        text_embeddings: torch.Tensor | None = None,
        cache_dir=None,
    ) -> None:
        """Set the classes (a ``Vocabulary`` or entries "name, synonym, ..."). ``seen`` is accepted for the
        predictor interface and ignored (no fusion); ``text_embeddings``: precomputed [K, P, D]."""
        vocabulary, text_embeddings = vocabulary_embeddings(
            vocabulary, self.text_encoder, text_embeddings, cache_dir
        )
        self.vocabulary = vocabulary
        self.text_embeddings = text_embeddings.to(self.device, torch.float32)

    # ----------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(
        self,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        *,
        multimask_output: bool = False,
        top_k: int = 5,
    ) -> Prediction:
        """Segment (SAM) and name (CLIP) N objects; arguments and result as ``OVSAMPredictor.predict``."""
        self._require_image()
        vocabulary = self._require_vocabulary()
        assert self.original_size is not None and self.input_size is not None
        assert self.text_embeddings is not None
        prompts = normalize_prompts(points, point_labels, boxes, self.original_size)
        torch_prompts = prompts.to_input_frame(self.original_size, self.input_size, self.device)
        fallback = self._fallback_boxes(prompts)
        masks, ious, low_res, probs = [], [], [], []
        for start, chunk in zip(
            range(0, len(torch_prompts), self.chunk_size), torch_prompts.chunks(self.chunk_size)
        ):
            mask, iou, logits = self._decode(chunk, multimask_output)
            if self.clean_masks and chunk.boxes is None and chunk.points is not None:
                assert chunk.point_labels is not None
                size = self.sam.image_encoder.img_size
                logits = keep_prompted_components(logits, chunk.points, chunk.point_labels, size)
                mask = self.sam.postprocess_masks(logits, self.input_size, self.original_size)
                mask = mask > self.sam.mask_threshold
            if self.clean_masks and prompts.boxes is not None:
                clipped = mask.cpu().numpy()
                clip_masks_to_boxes(clipped, prompts.boxes[start : start + len(chunk)])
                mask = torch.from_numpy(clipped).to(mask.device)
            boxes_orig = masks_to_boxes(mask[:, 0])
            valid = boxes_orig[:, 2] > boxes_orig[:, 0]
            region_fallback = fallback[start : start + len(chunk)].to(boxes_orig)
            boxes_orig = torch.where(valid[:, None], boxes_orig, region_fallback)
            embeddings = self._region_embeddings(boxes_orig, logits[:, 0], valid)
            probs.append(class_logits(embeddings, self.text_embeddings, LOGIT_SCALE)[:, :-1].softmax(-1))
            masks.append(mask.cpu().numpy())
            ious.append(iou)
            low_res.append(logits)
        return _to_prediction(
            np.concatenate(masks),
            torch.cat(ious),
            torch.cat(low_res),
            torch.cat(probs),
            vocabulary.names,
            top_k,
        )

    def _decode(self, chunk: PromptSet, multimask_output: bool) -> tuple[torch.Tensor, ...]:
        """SAM on prompts in the input frame -> masks bool [n, M, H, W] (original size), iou [n, M] and
        low-res logits [n, M, 4g, 4g] (padded input frame), sorted by iou, best first."""
        masks, iou, low_res = self.sam_predictor.predict_torch(
            chunk.points, chunk.point_labels, chunk.boxes, multimask_output=multimask_output
        )
        order = iou.argsort(dim=1, descending=True)
        masks = masks.gather(1, order[:, :, None, None].expand_as(masks))
        low_res = low_res.gather(1, order[:, :, None, None].expand_as(low_res))
        return masks, iou.gather(1, order), low_res

    def _fallback_boxes(self, prompts: NumpyPrompts) -> torch.Tensor:
        """[N, 4] XYXY (original frame) named where a mask is empty: the prompt's box, else a small square
        around its first point (clipped to the image)."""
        assert self.original_size is not None
        h, w = self.original_size
        if prompts.boxes is not None:
            return torch.from_numpy(prompts.boxes)
        assert prompts.points is not None
        half = _EMPTY_MASK_HALF_BOX * max(h, w) / 1024
        first = torch.from_numpy(prompts.points[:, 0])
        boxes = torch.cat([first - half, first + half], dim=1)
        limits = torch.tensor([w, h, w, h], dtype=boxes.dtype)
        return torch.minimum(boxes.clamp(min=0), limits)

    # ------------------------------------------------------------ per baseline
    def _set_clip_image(self, rgb: torch.Tensor) -> None:
        raise NotImplementedError

    def _reset_clip_image(self) -> None:
        raise NotImplementedError

    def _clip_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_clip_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _region_embeddings(
        self, boxes: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """boxes [n, 4] XYXY original frame; mask_logits [n, 4g, 4g] (padded SAM input frame); valid [n]
        (False: empty mask, the box is a fallback) -> [n, D] CLIP embeddings."""
        raise NotImplementedError

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise ValueError(NO_IMAGE)

    def _require_vocabulary(self):
        if self.vocabulary is None:
            raise ValueError(NO_VOCABULARY)
        return self.vocabulary


def _to_prediction(
    masks: np.ndarray,
    iou: torch.Tensor,
    low_res: torch.Tensor,
    probs: torch.Tensor,
    names: list[str],
    top_k: int,
) -> Prediction:
    k = min(top_k, probs.shape[1])
    topk_scores, topk_ids = probs.topk(k, dim=1)
    ids = topk_ids.cpu().numpy().astype(np.int64)
    return Prediction(
        masks=masks,
        iou=iou.float().cpu().numpy(),
        class_ids=ids[:, 0].copy(),
        class_names=[names[i] for i in ids[:, 0]],
        scores=topk_scores[:, 0].float().cpu().numpy(),
        topk_ids=ids,
        topk_scores=topk_scores.float().cpu().numpy(),
        topk_names=[[names[i] for i in row] for row in ids],
        low_res_logits=low_res.float().cpu().numpy(),
    )


class ImageCropBaseline(SamClipBaseline):
    """Image-crop baseline: CLIP encodes the image cut out around each SAM mask.

    Args (besides ``SamClipBaseline``'s):
        crop_scale: side of the square crop / longest side of the mask box (>= 1; 1.2 keeps a little
            context, as CLIP saw whole objects with their surroundings in training).
        mask_background: set the pixels outside the mask to CLIP's mean colour (the "segment" variant).
    """

    def __init__(
        self,
        sam: Sam,
        clip_model: nn.Module,
        tokenizer,
        *,
        crop_scale: float = DEFAULT_CROP_SCALE,
        mask_background: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(sam, clip_model, tokenizer, **kwargs)
        if crop_scale < 1:
            raise ValueError(f"crop_scale must be >= 1, got {crop_scale}.")
        self.crop_scale = float(crop_scale)
        self.mask_background = mask_background
        self._image: torch.Tensor | None = None  # [3, H, W] CLIP-normalised, on the CPU

    def _set_clip_image(self, rgb: torch.Tensor) -> None:
        self._image = (rgb / 255.0 - self.clip_mean) / self.clip_std

    def _reset_clip_image(self) -> None:
        self._image = None

    def _clip_state(self) -> dict[str, Any]:
        assert self._image is not None
        return {"clip_image": self._image.numpy()}

    def _set_clip_state(self, state: dict[str, Any]) -> None:
        self._image = torch.as_tensor(np.asarray(state["clip_image"]), dtype=torch.float32)

    def crop_windows(self, boxes: torch.Tensor) -> torch.Tensor:
        """Square integer windows [n, 4] XYXY (original frame, may reach outside the image) around boxes."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = ((boxes[:, 2:] - boxes[:, :2]).amax(dim=1) * self.crop_scale).clamp(min=1)
        start = torch.floor(centre - side[:, None] / 2)
        return torch.cat([start, start + torch.ceil(side)[:, None]], dim=1).long()

    def _region_embeddings(
        self, boxes: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        assert self._image is not None
        size = self.clip_input_size
        crops = torch.empty(len(boxes), 3, size, size)
        keep = self._masks_for_crops(mask_logits, valid) if self.mask_background else None
        for i, window in enumerate(self.crop_windows(boxes.cpu()).tolist()):
            crop = _crop_padded(self._image, window)
            if keep is not None:
                crop = crop * _crop_padded(keep[i : i + 1], window)
            crops[i] = F.interpolate(
                crop[None], (size, size), mode=self.clip_interpolation, align_corners=False, antialias=True
            )[0]
        return self.clip_model.encode_image(crops.to(self.device), normalize=True)

    def _masks_for_crops(self, mask_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[n, H, W] float keep-masks (1 inside) at the original size; empty masks keep everything."""
        assert self.original_size is not None and self.input_size is not None
        up = self.sam.postprocess_masks(mask_logits[:, None], self.input_size, self.original_size)[:, 0]
        return torch.where(valid[:, None, None], up > 0, True).float().cpu()


def _crop_padded(image: torch.Tensor, window: list[int]) -> torch.Tensor:
    """image [C, H, W] cut to ``window`` (x0, y0, x1, y1), zero-filled where it leaves the image."""
    x0, y0, x1, y1 = window
    h, w = image.shape[1:]
    out = image.new_zeros(image.shape[0], y1 - y0, x1 - x0)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


class FeatureCropBaseline(SamClipBaseline):
    """Feature-crop baseline: the CLIP trunk encodes the image once; each mask crops its features.

    Args (besides ``SamClipBaseline``'s):
        trunk_kind: "modified_resnet" or "timm" (default: read from the CLIP image tower).
        image_size: longest side the CLIP trunk sees (default: SAM's input size, 1024 for the real models).
        mask_features: zero the RoI bins outside the mask before CLIP's head (False: the plain box RoI).
    """

    def __init__(
        self,
        sam: Sam,
        clip_model: nn.Module,
        tokenizer,
        *,
        trunk_kind: str | None = None,
        image_size: int | None = None,
        mask_features: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(sam, clip_model, tokenizer, **kwargs)
        kind = trunk_kind or clip_trunk_kind(clip_model)
        # The attention pool's positional embedding has (CLIP input size / 32)^2 + 1 rows: RoIs match it.
        pool = self.clip_input_size // _CLIP_STRIDE
        self.trunk = CLIPTrunk(
            cast(nn.Module, clip_model.visual), kind=kind, region_pool_size=pool, frozen=True
        )
        self.image_size = int(image_size or sam.image_encoder.img_size)
        self.mask_features = mask_features
        self._clip_top: torch.Tensor | None = None  # [1, C5, h, w]
        self._scale: tuple[float, float] = (1.0, 1.0)  # (x, y): CLIP input frame / original frame

    def _set_clip_image(self, rgb: torch.Tensor) -> None:
        h, w = rgb.shape[1:]
        size = ResizeLongestSide.get_preprocess_shape(h, w, self.image_size)
        image = F.interpolate(rgb[None], size, mode="bilinear", align_corners=False, antialias=True)[0]
        image = (image.clamp(0, 255) / 255.0 - self.clip_mean) / self.clip_std
        pad_h, pad_w = (-size[0]) % _CLIP_STRIDE, (-size[1]) % _CLIP_STRIDE  # exact stride-32 grid
        image = F.pad(image, (0, pad_w, 0, pad_h))
        self._clip_top = self.trunk(image[None].to(self.device))[-1]
        self._scale = (size[1] / w, size[0] / h)

    def _reset_clip_image(self) -> None:
        self._clip_top = None

    def _clip_state(self) -> dict[str, Any]:
        assert self._clip_top is not None
        return {"clip_top": self._clip_top[0].float().cpu().numpy(), "clip_scale": self._scale}

    def _set_clip_state(self, state: dict[str, Any]) -> None:
        top = torch.as_tensor(np.asarray(state["clip_top"]), dtype=torch.float32, device=self.device)
        self._clip_top = top[None]
        sx, sy = state["clip_scale"]
        self._scale = (float(sx), float(sy))

    def _region_embeddings(
        self, boxes: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        assert self._clip_top is not None
        sx, sy = self._scale
        scaled = boxes.to(self.device) * torch.tensor([sx, sy, sx, sy], device=self.device)
        rois = torch.cat([scaled.new_zeros(len(scaled), 1), scaled], dim=1)
        if not self.mask_features:
            return self.trunk.region_embeddings(self.trunk.region_maps(self._clip_top), rois, _CLIP_STRIDE)
        pool = self.trunk.region_pool_size
        pooled = roi_align(
            self._clip_top, rois, (pool, pool), 1.0 / _CLIP_STRIDE, sampling_ratio=0, aligned=True
        )
        inside = self._mask_bins(boxes.to(self.device), mask_logits, pool)
        pooled = pooled * torch.where(valid[:, None, None, None], inside, 1.0)
        return self.trunk.head(pooled)

    def _mask_bins(self, boxes: torch.Tensor, mask_logits: torch.Tensor, pool: int) -> torch.Tensor:
        """Fraction of each RoI bin inside the mask: [n, 1, pool, pool], from the low-res SAM masks."""
        assert self.original_size is not None and self.input_size is not None
        sam_scale = torch.tensor(self.input_size[::-1] * 2, device=boxes.device) / torch.tensor(
            self.original_size[::-1] * 2, device=boxes.device
        )
        index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
        rois = torch.cat([index, boxes * sam_scale], dim=1)  # in the SAM input frame
        low_res_scale = mask_logits.shape[-1] / self.sam.image_encoder.img_size
        masks = (mask_logits[:, None] > 0).float()
        return roi_align(masks, rois, (pool, pool), low_res_scale, sampling_ratio=2, aligned=True)


def clip_trunk_kind(clip_model: nn.Module) -> str:
    """ "modified_resnet" for OpenAI ResNet CLIPs, "timm" for timm towers (ConvNeXt); else a ValueError."""
    name = type(getattr(clip_model, "visual", None)).__name__
    if name == "ModifiedResNet":
        return "modified_resnet"
    if name == "TimmModel":
        return "timm"
    raise ValueError(f"The feature-crop baseline needs a convolutional CLIP image tower, got {name}.")


# ---------------------------------------------------------------------------------------------- building
def build_sam(arch: str, checkpoint: str | Path | None = None, *, download: bool = True) -> Sam:
    """A ``segment_anything`` SAM: "vit_h" / "vit_l" / "vit_b" with weights from ``checkpoint`` (a file or
    source name; default the official ``sam_<arch>`` file, downloaded to the cache), or "tiny" (random
    weights unless ``checkpoint`` is given). Loading is strict (``ovsam_model.checkpoint``)."""
    from .checkpoint import load_into, read_foreign

    if arch not in SAM_ARCHS:
        raise ValueError(f"Unknown SAM '{arch}'; use one of {SAM_ARCHS}.")
    source = checkpoint if checkpoint is not None else (None if arch == "tiny" else f"sam_{arch}")
    parts = None
    if source is not None:  # read (or fail to find) the file before building a large random model
        kind, parts = read_foreign(source, download=download)
        if kind != "sam":
            raise ValueError(f"{source} is a {kind} file, not a SAM sam_vit_*.pth file.")
    sam = build_tiny_sam() if arch == "tiny" else sam_model_registry[arch]()
    if parts is not None:
        for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
            load_into(getattr(sam, name), parts.get(name, {}), where=name)
    return sam.eval()


def build_clip(model_name: str, pretrained: str | None) -> tuple[nn.Module, Any, str | None]:
    """open_clip model + tokenizer + cache name (None for random or local-file weights)."""
    from .clip_configs import register_clip_configs
    from .hub import clip_weights_error

    register_clip_configs()
    tag = None if pretrained in (None, "", "none") else pretrained
    try:
        model = open_clip.create_model(
            model_name, pretrained=tag, device="cpu", force_quick_gelu=tag == "openai"
        )
    except RuntimeError as error:
        if tag is None:
            raise
        raise clip_weights_error(model_name, tag, error) from error
    named = tag is not None and "/" not in tag and not tag.endswith((".pt", ".pth", ".bin"))
    return model.eval(), open_clip.get_tokenizer(model_name), f"{model_name}/{tag}" if named else None


def build_baseline(
    kind: str,
    *,
    sam: str = "vit_h",
    sam_checkpoint: str | Path | None = None,
    clip_model: str = "RN50x16",
    clip_pretrained: str | None = "openai",
    device: str | torch.device = "auto",
    download: bool = True,
    **options: Any,
) -> SamClipBaseline:
    """Build a combined SAM + CLIP baseline.

    Args:
        kind: "image_crop" or "feature_crop".
        sam: "vit_h", "vit_l", "vit_b" (official weights) or "tiny" (random, for tests).
        sam_checkpoint: SAM file or source name (default: the official file of ``sam``).
        clip_model: open_clip architecture (``RN50x16``; this package's ``ovsam-tiny-RN`` for tests).
        clip_pretrained: open_clip tag or local file; "none" = random weights.
        device: "auto" (cuda > mps > cpu), "cuda", "mps" or "cpu".
        download: allow downloading the SAM file into the cache.
        options: passed to the baseline (``crop_scale``, ``mask_background``, ``image_size``,
            ``mask_features``, ``chunk_size``, ``clean_masks``).
    """
    from .device import resolve_device

    classes = {"image_crop": ImageCropBaseline, "feature_crop": FeatureCropBaseline}
    if kind not in classes:
        raise ValueError(f"Unknown baseline '{kind}'; use one of {BASELINE_KINDS}.")
    target = resolve_device(device)
    sam_model = build_sam(sam, sam_checkpoint, download=download).to(target)
    clip, tokenizer, clip_name = build_clip(clip_model, clip_pretrained)
    return classes[kind](sam_model, clip.to(target), tokenizer, clip_name=clip_name, **options)
