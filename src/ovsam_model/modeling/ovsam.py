"""OV-SAM: receives finished submodules and adds only the glue (preprocess, encode, decode, classify)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from ..config import OVSAMConfig
from ..text import TextEncoder
from .clip2sam import FPN, RegionHead, class_logits, fuse_probabilities, masks_to_boxes, multilevel_roi_align
from .clip_trunk import CLIPTrunk
from .sam2clip import SAM2CLIPAdapter

CLIP_TOP_STRIDE = 32


@dataclass
class ImageFeatures:
    """Everything the decoder and the classifier need from one encoded batch of images.

    embedding: [B, C, S/16, S/16] SAM-style image embedding.
    fpn: P2..P5, [B, F, S/s, S/s] for s in 4, 8, 16, 32.
    clip_top: C5 of the CLIP trunk, [B, C5, S/32, S/32], for the frozen-CLIP region score.
    """

    embedding: torch.Tensor
    fpn: list[torch.Tensor]
    clip_top: torch.Tensor
    clip_maps: torch.Tensor | None = None  # CLIPTrunk.region_maps(clip_top): derived, never cached

    def select(self, index: int) -> ImageFeatures:
        """The features of image ``index`` as a batch of one."""
        return ImageFeatures(
            self.embedding[index : index + 1],
            [f[index : index + 1] for f in self.fpn],
            self.clip_top[index : index + 1],
            None if self.clip_maps is None else self.clip_maps[index : index + 1],
        )

    def to(self, *args, **kwargs) -> ImageFeatures:
        return ImageFeatures(
            self.embedding.to(*args, **kwargs),
            [f.to(*args, **kwargs) for f in self.fpn],
            self.clip_top.to(*args, **kwargs),
            None if self.clip_maps is None else self.clip_maps.to(*args, **kwargs),
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor view (``embedding``, ``fpn_0``..``fpn_3``, ``clip_top``), e.g. for caching."""
        out = {"embedding": self.embedding, "clip_top": self.clip_top}
        out.update({f"fpn_{i}": f for i, f in enumerate(self.fpn)})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ImageFeatures:
        levels = sorted(k for k in tensors if k.startswith("fpn_"))
        return cls(tensors["embedding"], [tensors[k] for k in levels], tensors["clip_top"])


@dataclass
class Decoded:
    """Decoder output for N prompts on one image.

    low_res_logits: [N, M, 4g, 4g] mask logits in the padded input frame at 1/4 resolution.
    iou: [N, M] predicted IoU (stability score where the decoder has no IoU head).
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor


class NoIoUHead(nn.Module):
    """Stands in for SAM's IoU head in the released layout, which has none; its output is replaced later."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.new_full((tokens.shape[0], 1), float("nan"))


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU between the masks thresholded at ``threshold - offset`` and ``threshold + offset`` ([..., H, W])."""
    inner = (logits > threshold + offset).sum(dim=(-1, -2)).float()
    outer = (logits > threshold - offset).sum(dim=(-1, -2)).float()
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros_like(outer))


class OVSAM(nn.Module):
    """Open-Vocabulary SAM.

    Children (names fixed: checkpoints and key remapping depend on them): ``backbone`` (CLIP trunk),
    ``neck`` (SAM2CLIP adapter), ``fpn`` and ``region_head`` (CLIP2SAM), ``prompt_encoder`` and
    ``mask_decoder`` (segment_anything), ``clip_text`` (the CLIP model whose text tower encodes vocabularies;
    its ``visual`` is the backbone's), and in the released layout ``label_mlp`` (stored, unused: the released
    head multiplies its output by zero).
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        config: OVSAMConfig,
        *,
        backbone: CLIPTrunk,
        neck: SAM2CLIPAdapter,
        fpn: FPN,
        region_head: RegionHead,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        clip_text: nn.Module,
        tokenizer,
        label_mlp: MLP | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.neck = neck
        self.fpn = fpn
        self.region_head = region_head
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.clip_text = clip_text
        self.tokenizer = tokenizer
        if label_mlp is not None:
            self.label_mlp = label_mlp
        self.clip_text.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)
        self._dense_pe: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def text_encoder(self):
        """The CLIP text tower as a ``TextEncoder`` (named by its pretrained tag, else by a weight hash)."""
        if getattr(self, "_text_encoder", None) is None:
            tag = getattr(self, "clip_pretrained", None)
            named = isinstance(tag, str) and "/" not in tag and not tag.endswith((".pt", ".pth", ".bin"))
            name = f"{self.config.clip.model_name}/{tag}" if named else None
            self._text_encoder = TextEncoder(self.clip_text, self.tokenizer, name=name)
        return self._text_encoder

    @property
    def has_iou_head(self) -> bool:
        return not isinstance(self.mask_decoder.iou_prediction_head, NoIoUHead)

    def train(self, mode: bool = True) -> OVSAM:
        super().train(mode)
        self.clip_text.eval()
        self._dense_pe = None
        return self

    def _apply(self, fn, recurse=True):  # device/dtype moves invalidate the cached positional encoding
        self._dense_pe = None
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------ image
    def preprocess(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Normalise with SAM's statistics and pad bottom/right to a square.

        images: [B, 3, h, w] or a list of [3, h_i, w_i], values 0..255, max(h, w) <= image_size (resize first).
        Returns [B, 3, S, S]; padding is 0 after normalisation.
        """
        size = self.config.image_size
        if isinstance(images, torch.Tensor):
            images = list(images)
        out = torch.zeros(len(images), 3, size, size, device=self.device, dtype=self.pixel_mean.dtype)
        for i, image in enumerate(images):
            h, w = image.shape[-2:]
            if h > size or w > size:
                raise ValueError(
                    f"Image of size {h}x{w} exceeds the model input size {size}; resize it first."
                )
            out[i, :, :h, :w] = (image.to(out) - self.pixel_mean) / self.pixel_std
        return out

    def encode_image(self, images: torch.Tensor | list[torch.Tensor]) -> ImageFeatures:
        """images: see ``preprocess``. Returns the features for the decoder and classifier."""
        clip_features = self.backbone(self.preprocess(images))
        features = ImageFeatures(self.neck(clip_features), self.fpn(clip_features), clip_features[-1])
        if self.config.fusion.enabled and not self.training:
            self.clip_region_maps(features)  # once per image, so that each prompt is cheap
        return features

    def clip_region_maps(self, features: ImageFeatures) -> torch.Tensor:
        """The frozen CLIP's region maps of ``features`` (computed on first use, then kept with them)."""
        if features.clip_maps is None:
            features.clip_maps = self.backbone.region_maps(features.clip_top)
        return features.clip_maps

    # ----------------------------------------------------------------- prompts
    def dense_pe(self) -> torch.Tensor:
        """[1, C, g, g] positional encoding of the embedding grid, computed once per device."""
        if self._dense_pe is None or self.training:
            pe = self.prompt_encoder.get_dense_pe()
            if self.training:
                return pe
            self._dense_pe = pe
        return self._dense_pe

    def decode(
        self,
        features: ImageFeatures,
        *,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> Decoded:
        """Decode N prompts on one image (``features`` is a batch of one).

        points: [N, P, 2] (x, y) in the padded input frame; point_labels: [N, P] 1 positive, 0 negative,
        -1 padding; boxes: [N, 4] XYXY in the input frame. A prompt may have points, a box, or both.
        Returns masks [N, M, 4g, 4g] (M = 3 with multimask_output and a multimask decoder, else 1).
        """
        if features.embedding.shape[0] != 1:
            raise ValueError("decode() takes the features of one image; use features.select(i).")
        has_multimask = self.mask_decoder.num_multimask_outputs > 0
        # One click is ambiguous (part or whole?): decode the multimask candidates and keep the one with the
        # best predicted IoU rather than the single-mask token, which is trained on less ambiguous prompts.
        single_click = (
            boxes is None
            and points is not None
            and point_labels is not None
            and bool(((point_labels >= 0).sum(dim=1) == 1).all())
        )
        pick_best = not multimask_output and has_multimask and single_click
        multimask_output = (multimask_output or pick_best) and has_multimask
        sparse, dense = self.prompt_encoder(
            points=(points, point_labels) if points is not None else None, boxes=boxes, masks=None
        )
        logits, iou = self.mask_decoder(
            image_embeddings=features.embedding,
            image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        if not self.has_iou_head:
            iou = stability_score(logits)
        if pick_best:
            best = iou.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            logits, iou = logits[rows, best][:, None], iou[rows, best][:, None]
        return Decoded(logits, iou)

    # ------------------------------------------------------------------ naming
    def region_rois(
        self, mask_logits: torch.Tensor, fallback_boxes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes of predicted masks in the input frame: mask_logits [N, 4g, 4g] -> ([N, 4] XYXY, [N] valid).

        Empty masks take ``fallback_boxes`` where given (e.g. the prompt's own box).
        """
        scale = self.config.image_size / mask_logits.shape[-1]
        boxes = masks_to_boxes(mask_logits > 0) * scale
        valid = boxes[:, 2] > boxes[:, 0]
        if fallback_boxes is not None:
            boxes = torch.where(valid[:, None], boxes, fallback_boxes.to(boxes))
        return boxes, valid

    def region_embeddings(
        self,
        features: ImageFeatures,
        boxes: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        *,
        with_clip: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Region embeddings of the CLIP2SAM head and of the frozen CLIP.

        boxes: [N, 4] XYXY in the input frame; batch_index: [N] image of each box (default all 0).
        Returns ([N, D], [N, D] or None when fusion is off or ``with_clip`` is False).
        """
        if batch_index is None:
            batch_index = boxes.new_zeros(boxes.shape[0])
        rois = torch.cat([batch_index.to(boxes)[:, None], boxes], dim=1)
        head = self.config.head
        pooled = multilevel_roi_align(features.fpn, rois, head.roi_output_size, head.finest_scale)
        head_embed = self.region_head(pooled)
        clip_embed = None
        if with_clip and self.config.fusion.enabled:
            maps = self.clip_region_maps(features)
            clip_embed = self.backbone.region_embeddings(maps, rois, CLIP_TOP_STRIDE)
        return head_embed, clip_embed

    def head_logits(self, head_embed: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """[N, D] x [K, P, D] -> [N, K + 1] logits of the trainable head (background last)."""
        return class_logits(head_embed, text_embeddings, self.config.head.logit_scale)

    def classify(
        self,
        head_embed: torch.Tensor,
        clip_embed: torch.Tensor | None,
        text_embeddings: torch.Tensor,
        seen: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class probabilities [N, K + 1] (background last), fused with the frozen CLIP where enabled."""
        head_logits = self.head_logits(head_embed, text_embeddings)
        clip_logits = None
        if clip_embed is not None:
            clip_logits = class_logits(clip_embed, text_embeddings, self.config.head.logit_scale)
        fusion = self.config.fusion
        return fuse_probabilities(
            head_logits,
            clip_logits,
            seen,
            alpha_seen=fusion.alpha_seen,
            beta_unseen=fusion.beta_unseen,
            valid=valid,
        )

    def upscale_masks(
        self, low_res_logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """[N, M, 4g, 4g] logits -> [N, M, H, W] logits at the original image size.

        Upsample to the padded input size, crop the valid region, resize to the original size (bilinear).
        """
        size = self.config.image_size
        masks = F.interpolate(low_res_logits, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
