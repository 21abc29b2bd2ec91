"""``OVSAMPredictor``: encode an image once, then segment and name objects from many prompts.

numpy in and out, over a batched torch path. Coordinates: points are (x, y) pixels of the original image,
boxes are XYXY pixels of the original image; masks come back at the original (H, W).

Large images are tiled (``ovsam_model.tiling``, ``ovsam_model.tiled``): read and encoded tile by tile at
native resolution, lazily, each prompt decoded and named on the tile that holds it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cuda_graphs import CUDA_GRAPH_MAX_PROMPTS, DecodingGraphs
from .device import release_freed_memory
from .embedding_state import check_image_state, check_tile_state, feature_state, features_from_state
from .exemplars.mixin import ExamplesMixin
from .image import to_model_rgb
from .modeling.ovsam import OVSAM, ImageFeatures
from .postprocess import keep_prompted_components
from .prediction import NO_IMAGE, NO_VOCABULARY, Prediction, TorchPrediction, check_top_k
from .prompts import PromptSet, normalize_prompts
from .text import vocabulary_embeddings
from .tiled import (
    DEFAULT_TILE_CACHE_BYTES,
    TileCache,
    TileCallback,
    TiledImage,
    as_image,
    check_cache_bytes,
    check_whole_size,
    image_size_of,
    predict_tiled,
    prompt_routes,
)
from .tiling import TileSpec, Window, resolve_tiling
from .vocabulary import Vocabulary
from .whole import predict_whole

__all__ = ["DEFAULT_CHUNK_SIZE", "OVSAMPredictor", "Prediction", "TileSpec", "TorchPrediction"]

# Prompts decoded per chunk: bounds memory (SAM's decoder repeats the image embedding per prompt and
# upsamples each prompt's features to 4x the grid). Small on the CPU, where a chunk's size does not lower the
# cost per prompt (benchmarks/README.md, "many prompts"); larger on a GPU, where it does.
DEFAULT_CHUNK_SIZE = {"cpu": 4, "cuda": 64}
# Half side (input-frame pixels) of the region used to name a point prompt whose mask came out empty.
_EMPTY_MASK_HALF_BOX = 16.0


class OVSAMPredictor(ExamplesMixin):
    """Segment-and-name predictor in the spirit of ``segment_anything.SamPredictor``.

    chunk_size: prompts decoded at once (default: 4 on the CPU, 64 on CUDA). clean_masks (default True): a
    click-only prompt keeps the connected parts of its mask that hold a positive point, and is named from that;
    a box prompt's mask is clipped to the box (see ``ovsam_model.postprocess``). False gives the decoder's
    masks as they are. cuda_graphs (default True): on CUDA, decode and name box prompts by replaying a
    captured CUDA graph (same results; see ``CUDA_GRAPH_MAX_PROMPTS``).

    tiling: "auto" (default, ``TileSpec()``): an image whose longer side exceeds 1.5 model inputs is tiled;
    a ``TileSpec`` to choose overlap, scale or threshold; "off": every image is resized whole to the model's
    input, as SAM does. A tiled image is read and encoded tile by tile, only where prompts are, and its
    predictions carry ``CompactMasks`` (see ``Prediction``). tile_cache_bytes: memory kept for encoded tiles
    (least recently used dropped). ``on_tile_encode(index, window)`` (attribute, default None) is called
    before each tile is encoded, and ``encoding_tile`` says which one is, e.g. for a status line.

    Examples (``learn_examples``, ``add_examples``, ``load_examples``; see ``ovsam_model.exemplars``): once
    there are any, objects are named from the text and the examples fused, over ``class_names`` (the
    vocabulary's, then classes with examples only), and ``Prediction.unknown`` flags objects that fit nothing.
    """

    def __init__(
        self,
        model: OVSAM,
        *,
        chunk_size: int | None = None,
        clean_masks: bool = True,
        cuda_graphs: bool = True,
        tiling: str | TileSpec = "auto",
        tile_cache_bytes: int = DEFAULT_TILE_CACHE_BYTES,
    ) -> None:
        if chunk_size is not None and not (_is_int(chunk_size) and chunk_size >= 1):
            raise ValueError(
                f"chunk_size must be a whole number >= 1 (or None for the default), got {chunk_size!r}."
            )
        self.tiling = resolve_tiling(tiling, model.config.image_size)
        self.tile_cache_bytes = check_cache_bytes(tile_cache_bytes)
        self.tiles: TileCache | None = None
        self.on_tile_encode: TileCallback | None = None
        self.model = model
        self.chunk_size = int(chunk_size or DEFAULT_CHUNK_SIZE.get(model.device.type, 16))
        self.clean_masks = clean_masks
        self.cuda_graphs = cuda_graphs
        self._graphs = DecodingGraphs()
        self.features: ImageFeatures | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.vocabulary: Vocabulary | None = None
        self.text_embeddings: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        extras = getattr(model, "checkpoint_extras", None)  # a checkpoint's own vocabulary is the default
        if extras is not None and extras.vocabulary is not None:
            self.set_vocabulary(extras.vocabulary, text_embeddings=extras.text_embeddings)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ image
    def input_size_for(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) after resizing the longest side of (H, W) to the model's image size."""
        h, w = original_size
        scale = self.model.config.image_size / max(h, w)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))  # a 1 x 2000 strip keeps a row

    def prepare_image(
        self, image: np.ndarray, contrast_limits: Sequence[float] | None = None
    ) -> torch.Tensor:
        """(H, W) / (H, W, C) image -> float [3, h, w] in 0..255, longest side resized to the model size."""
        rgb = to_model_rgb(image, contrast_limits)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        size = self.input_size_for(rgb.shape[:2])
        if size != rgb.shape[:2]:
            tensor = F.interpolate(tensor, size, mode="bilinear", align_corners=False, antialias=True)
        return tensor[0].clamp_(0, 255)

    @torch.no_grad()
    def set_image(self, image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> None:
        """Encode an image (see ``ovsam_model.image`` for the contrast rule) and cache its features.

        image: (H, W) or (H, W, C) array (or anything ``np.asarray`` takes) of an integer, float or bool dtype;
        for a tiled image also an array-like read by slicing (zarr, dask, tifffile's ``aszarr`` through zarr),
        of which nothing is read here but a sample for the contrast limits (see ``tiled.image_contrast_limits``).
        """
        image = as_image(image)
        size = image_size_of(image)
        if self.tiling is not None and self.tiling.tiles(size):
            tiled = TiledImage(image, self.tiling, contrast_limits)
            self.reset_image()
            self.tiles = TileCache(tiled, self._encode, self.tile_cache_bytes, self._notify_tile)
            self.original_size = size
            self._pixels = image
            return
        check_whole_size(size)
        image = np.asarray(image)
        tensor = self.prepare_image(image, contrast_limits)
        self.reset_image()
        self.features = self._encode(tensor)
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = (int(tensor.shape[1]), int(tensor.shape[2]))
        self._pixels = image

    @torch.no_grad()
    def _encode(self, tensor: torch.Tensor) -> ImageFeatures:
        """One model input [3, h, w] (an image or a tile) -> its features."""
        features = self.model.encode_image(tensor[None].to(self.device))
        if self.device.type == "cpu":
            release_freed_memory()  # the encoder's freed activations, before decoding allocates
        return features

    def _notify_tile(self, index: int, window: Window) -> None:
        if self.on_tile_encode is not None:
            self.on_tile_encode(index, window)

    def reset_image(self) -> None:
        self._forget_graphs()
        self.features = self.tiles = self._pixels = None
        self.original_size = self.input_size = None

    @property
    def is_image_set(self) -> bool:
        return self.features is not None or self.tiles is not None

    # ------------------------------------------------------------------ tiles
    @property
    def tile_grid(self) -> list[Window]:
        """The tiles of the image set (row-major ``Window``s, full-image pixels); [] when it is not tiled."""
        return [] if self.tiles is None else list(self.tiles.tiled.grid)

    @property
    def encoding_tile(self) -> tuple[int, Window] | None:
        """(index, window) of the tile being encoded now (index -1: a view made for one prompt), else None."""
        return None if self.tiles is None else self.tiles.encoding

    def tile_key(self, index: int) -> str:
        """Content key of tile ``index``: its geometry, scale, contrast limits and a hash of its pixels (reads
        the tile once); a cache adds the model's identity."""
        cache, window = self._tile(index)
        return cache.key(window)

    def get_tile_embedding(self, index: int) -> dict[str, Any]:
        """The state of tile ``index`` (encoded now if needed): the arrays of ``get_image_embedding``, its
        ``input_size`` and its ``window`` (y0, x0, y1, x1) in full-image pixels."""
        cache, window = self._tile(index)
        state = feature_state(cache.get(window, index))
        state["input_size"], state["window"] = window.input_size, window.bounds
        return state

    def set_tile_embedding(self, index: int, state: dict[str, Any]) -> None:
        """Restore tile ``index`` from ``get_tile_embedding`` (e.g. from a cache) without encoding it."""
        cache, window = self._tile(index)
        check_tile_state(state, self.model.config, index, window)
        cache.put(window, features_from_state(state, self.model.config, self.device))

    def prepare_tiles(
        self,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
    ) -> list[tuple[int, Window]]:
        """Encode now (e.g. in a worker thread) every view that ``predict`` with these prompts will decode on,
        unless it is kept; returns (tile index, window) per prompt, index -1 for a view made for the prompt."""
        if self.tiles is None:
            raise ValueError("The image set is not tiled (or none is set): use set_image, then predict.")
        assert self.original_size is not None
        routes = prompt_routes(self.tiles, normalize_prompts(points, point_labels, boxes, self.original_size))
        for index, window in routes:
            self.tiles.get(window, index)
        return routes

    def _tile(self, index: int) -> tuple[TileCache, Window]:
        if self.tiles is None:
            raise ValueError("The image set is not tiled (or none is set): use get_image_embedding().")
        return self.tiles, self.tiles.window(index)

    def get_image_embedding(self) -> dict[str, Any]:
        """The cached image state as numpy arrays (``embedding``, ``fpn_0``..``fpn_3``, ``clip_top``) plus the
        ``original_size`` and ``input_size`` tuples; ``set_image_embedding`` restores it."""
        if self.tiles is not None:
            raise ValueError(
                f"This image is tiled ({len(self.tiles.tiled.grid)} tiles): use get_tile_embedding(index) "
                "and tile_key(index) per tile, or OVSAMPredictor(model, tiling='off') to encode it whole."
            )
        state = feature_state(self._require_image())
        state["original_size"] = self.original_size
        state["input_size"] = self.input_size
        return state

    def set_image_embedding(self, state: dict[str, Any], *, image: np.ndarray | None = None) -> None:
        """Restore a state from ``get_image_embedding`` (e.g. from a cache), checking it fits this model.

        image: the image's pixels, which naming with examples measures objects on (optional otherwise)."""
        original_size, input_size = check_image_state(state, self.model.config, self.input_size_for)
        if image is not None and tuple(np.shape(image)[:2]) != tuple(original_size):
            raise ValueError(
                f"The image of shape {np.shape(image)} is not the one of this embedding "
                f"({original_size[1]}x{original_size[0]} pixels): give the image it was computed from."
            )
        features = features_from_state(state, self.model.config, self.device)
        self.reset_image()
        self.features = features
        self.original_size, self.input_size = original_size, input_size
        self._pixels = image

    def set_image_features(
        self,
        features: ImageFeatures,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        image: np.ndarray | None = None,
    ) -> None:
        """Use an image's features as they are (already on this model's device, e.g. a server's store of encoded
        images), without the checks and copies of ``set_image_embedding``; image: its pixels, for examples."""
        self.reset_image()
        self.features = features
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self._pixels = image

    # -------------------------------------------------------------- vocabulary
    def set_vocabulary(
        self,
        vocabulary,
        *,
        seen: Sequence[bool] | None = None,
        text_embeddings: torch.Tensor | None = None,
        cache_dir=None,
    ) -> None:
        """Set the class names objects are named from.

        vocabulary: a ``Vocabulary`` or a list of entries "name, synonym, ..."; seen: per class, whether the
        model was trained on it (weights the fusion; default: the vocabulary's own flags); text_embeddings:
        precomputed [K, P, D] embeddings (default: computed with the model's text tower, cached on disk).
        """
        vocabulary, text_embeddings = vocabulary_embeddings(
            vocabulary, self.model.text_encoder, text_embeddings, cache_dir
        )
        width = self.model.config.embed_dim
        if text_embeddings.shape[-1] != width:
            raise ValueError(
                f"text_embeddings have {text_embeddings.shape[-1]} features per synonym; the model "
                f"'{self.model.config.name}' names regions with {width}: compute them with this model's "
                "text tower (ovsam_model.text.encode_vocabulary(vocabulary, model.text_encoder))."
            )
        flags = list(seen) if seen is not None else list(vocabulary.seen)
        if len(flags) != len(vocabulary):
            raise ValueError(f"seen has {len(flags)} flags for {len(vocabulary)} classes.")
        self._forget_graphs()
        self.vocabulary = vocabulary
        self.text_embeddings = text_embeddings.to(self.device, torch.float32)
        self.seen = torch.tensor(flags, dtype=torch.bool, device=self.device)

    # ----------------------------------------------------------------- predict
    def predict(
        self,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        *,
        multimask_output: bool = False,
        top_k: int = 5,
    ) -> Prediction:
        """Segment and name N objects.

        Args:
            points: (P, 2) for one object or (N, P, 2) for N objects; (x, y) pixels of the original image.
            point_labels: (P,) or (N, P): 1 positive, 0 negative, -1 padding (ignored).
            boxes: (4,) or (N, 4) XYXY pixels of the original image. With points too, N must match: each object
                then has its points and its box.
            multimask_output: return 3 candidate masks per object (sorted by predicted IoU, best first).
            top_k: how many alternative classes to return.

        Returns a ``Prediction`` in the original-image frame: dense bool (N, M, H, W) masks for an image
        encoded whole; for a tiled image, each prompt is decoded and named on its tile (``tiling.route``) and
        the masks are ``CompactMasks`` (cropped to their boxes, ``.paint(labels, ids)`` for label images).
        """
        top_k = check_top_k(top_k)
        if self.tiles is None:
            self._require_image()
        names = self._require_vocabulary().names
        text_top_k = len(names) if self._naming is not None else top_k  # fusion needs every class
        if self.tiles is not None:  # each prompt on its tile, masks cropped to their boxes
            assert self.original_size is not None
            prompts = normalize_prompts(points, point_labels, boxes, self.original_size)
            result = predict_tiled(self, self.tiles, prompts, names, multimask_output, text_top_k)
        else:
            features = self._require_image()
            assert self.original_size is not None and self.input_size is not None
            prompts = normalize_prompts(points, point_labels, boxes, self.original_size)
            sizes = (self.original_size, self.input_size)
            result = predict_whole(self, features, prompts, sizes, names, multimask_output, text_top_k)
        return result if self._naming is None else self._name_with_examples(result, top_k)

    @torch.no_grad()
    def predict_torch(
        self, features: ImageFeatures, prompts: PromptSet, *, multimask_output: bool = False
    ) -> TorchPrediction:
        """Decode and name prompts given in the model-input frame, ``chunk_size`` prompts at a time."""
        assert self.text_embeddings is not None and self.seen is not None
        logits, ious, probs = [], [], []
        for chunk in prompts.chunks(self.chunk_size):
            if self._graph_fits(chunk):
                low_res, iou, prob = self._replay(features, chunk, multimask_output)
            else:
                low_res, iou, prob = self._decode_and_name(features, chunk, multimask_output)
            logits.append(low_res)
            ious.append(iou)
            probs.append(prob)
        return TorchPrediction(torch.cat(logits), torch.cat(ious), torch.cat(probs))

    def _decode_and_name(
        self, features: ImageFeatures, chunk: PromptSet, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk: low-res logits [n, M, 4g, 4g] and iou [n, M] sorted best first, probabilities [n, K + 1]."""
        assert self.text_embeddings is not None and self.seen is not None
        decoded = self.model.decode(
            features,
            points=chunk.points,
            point_labels=chunk.point_labels,
            boxes=chunk.boxes,
            multimask_output=multimask_output,
        )
        order = decoded.iou.argsort(dim=1, descending=True)
        iou = decoded.iou.gather(1, order)
        low_res = decoded.low_res_logits.gather(1, order[:, :, None, None].expand_as(decoded.low_res_logits))
        if self.clean_masks and chunk.boxes is None and chunk.points is not None:
            assert chunk.point_labels is not None
            low_res = keep_prompted_components(
                low_res, chunk.points, chunk.point_labels, self.model.config.image_size
            )
        rois, valid = self.model.region_rois(low_res[:, 0], fallback_boxes=self._fallback_boxes(chunk))
        if chunk.boxes is not None and self.model.config.head.name_box_prompts_by_box:
            rois = chunk.boxes
        head_embed, clip_embed = self.model.region_embeddings(features, rois)
        probs = self.model.classify(head_embed, clip_embed, self.text_embeddings, self.seen, valid)
        return low_res, iou, probs

    def _graph_fits(self, chunk: PromptSet) -> bool:
        """Box-only prompts on CUDA, few enough: the path without host synchronisation (clicks are cleaned on
        the CPU)."""
        return (
            self.cuda_graphs
            and self.tiles
            is None  # tiles switch features: a graph per tile would be captured again and again
            and self.device.type == "cuda"
            and chunk.points is None
            and chunk.boxes is not None
            and len(chunk) <= CUDA_GRAPH_MAX_PROMPTS
        )

    def _replay(
        self, features: ImageFeatures, chunk: PromptSet, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_decode_and_name`` through a CUDA graph captured for this image, vocabulary and prompt count."""
        assert chunk.boxes is not None
        inputs = (features, self.text_embeddings, self.seen)  # predict_torch may be given any features
        try:
            return self._graphs.replay(
                inputs,
                (len(chunk), multimask_output),
                lambda boxes: self._decode_and_name(features, PromptSet(None, None, boxes), multimask_output),
                chunk.boxes,
            )
        except RuntimeError as err:  # an operation that cannot be captured: decode as usual from now on
            warnings.warn(f"CUDA graph capture failed ({err}); decoding without graphs.", stacklevel=3)
            self.cuda_graphs = False
            self._graphs.forget()
            return self._decode_and_name(features, chunk, multimask_output)

    # --------------------------------------------------------------- internals
    def _forget_graphs(self) -> None:
        """Drop the captured graphs and what they were captured on (a new image or vocabulary)."""
        self._graphs.forget()

    def _fallback_boxes(self, prompts: PromptSet) -> torch.Tensor:
        """Where a mask comes out empty, name the prompt's own box, or a small box around its first point."""
        n = len(prompts)
        boxes = torch.zeros(n, 4, device=self.device)
        if prompts.points is not None:
            first = prompts.points[:, 0]
            half = _EMPTY_MASK_HALF_BOX * self.model.config.image_size / 1024
            boxes = torch.cat([first - half, first + half], dim=1)
        if prompts.boxes is not None:
            boxes = prompts.boxes
        return boxes

    def _require_image(self) -> ImageFeatures:
        if self.features is None:
            raise ValueError(NO_IMAGE)
        return self.features

    def _require_vocabulary(self) -> Vocabulary:
        if self.vocabulary is None:
            raise ValueError(NO_VOCABULARY)
        return self.vocabulary


def _is_int(value: object) -> bool:
    """A whole number (Python or numpy integer), not a bool or a float."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
