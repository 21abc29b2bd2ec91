"""The part both baselines share: SAM masks through ``SamPredictor``, the vocabulary, CLIP scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from ..image import to_model_rgb
from ..modeling.clip2sam import class_logits, masks_to_boxes
from ..postprocess import clip_masks_to_boxes, keep_prompted_components
from ..prediction import NO_IMAGE, NO_VOCABULARY, Prediction, check_top_k, to_prediction
from ..prompts import NumpyPrompts, PromptSet, normalize_prompts
from ..text import TextEncoder, vocabulary_embeddings
from ..vocabulary import Vocabulary

LOGIT_SCALE = 100.0  # as OV-SAM's classifier (CLIP's own learned scale is ~100 too)
DEFAULT_CHUNK_SIZE = 32
_EMPTY_MASK_HALF_BOX = 16.0  # half side (in a 1024-px frame) of the region named when a mask is empty


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
        self.vocabulary: Vocabulary | None = None
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

    def set_image_embedding(self, state: dict[str, Any], *, image: np.ndarray | None = None) -> None:
        """Restore a state from ``get_image_embedding`` of the same baseline (``image``: accepted as by
        ``OVSAMPredictor``, which measures examples on it; baselines name from text alone)."""
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
        top_k = check_top_k(top_k)
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
        return to_prediction(
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

    def _require_vocabulary(self) -> Vocabulary:
        if self.vocabulary is None:
            raise ValueError(NO_VOCABULARY)
        return self.vocabulary
