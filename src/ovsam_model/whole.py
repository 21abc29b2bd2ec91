"""Predicting on an image encoded whole: prompts decoded chunk by chunk into dense masks at the original size.

The counterpart of ``ovsam_model.tiled.predict_tiled`` for images that are not tiled; ``OVSAMPredictor.predict``
chooses between them. Only the bool masks and a float16 copy of the low-resolution logits are kept for all
prompts; each chunk's float work is freed before the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .device import release_freed_memory
from .modeling.ovsam import ImageFeatures
from .postprocess import clip_masks_to_boxes
from .prediction import Prediction, TorchPrediction, to_prediction
from .prompts import NumpyPrompts
from .tiled import TileDecoder

# Masks brought to the original size per step: each is a float image at the padded model size and one at the
# original size before it becomes bool, so few at a time.
UPSCALE_CHUNK_SIZE = 4


def predict_whole(
    predictor: TileDecoder,
    features: ImageFeatures,
    prompts: NumpyPrompts,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    names: Sequence[str],
    multimask_output: bool,
    top_k: int,
) -> Prediction:
    """Decode and name checked prompts (original-image frame) on ``features``; sizes: (original, input)."""
    original_size, input_size = sizes
    torch_prompts = prompts.to_input_frame(original_size, input_size, predictor.device)
    masks: np.ndarray | None = None
    logits: torch.Tensor | None = None  # filled chunk by chunk: no concatenation copy at the end
    ious, probs = [], []
    done = 0
    for chunk in torch_prompts.chunks(predictor.chunk_size):
        part = predictor.predict_torch(features, chunk, multimask_output=multimask_output)
        if masks is None or logits is None:
            n, m = len(torch_prompts), part.iou.shape[1]
            masks = np.empty((n, m, *original_size), dtype=bool)
            logits = torch.empty((n, m, *part.low_res_logits.shape[-2:]), dtype=torch.float16)
        rows = slice(done, done + len(chunk))
        full_size_masks(predictor, part.low_res_logits, sizes, out=masks[rows])
        if predictor.clean_masks and prompts.boxes is not None:
            clip_masks_to_boxes(masks[rows], prompts.boxes[rows])
        logits[rows] = part.low_res_logits
        ious.append(part.iou)
        probs.append(part.probabilities)
        done += len(chunk)
        if predictor.device.type == "cpu" and done < len(torch_prompts):
            release_freed_memory()  # a chunk's freed work, so that the heap does not fragment and grow
    if masks is None or logits is None:  # no prompts (e.g. an empty (0, 4) array of detector boxes)
        m = 3 if multimask_output and predictor.model.mask_decoder.num_multimask_outputs > 0 else 1
        side = 4 * predictor.model.config.embedding_size
        masks = np.zeros((0, m, *original_size), dtype=bool)
        logits = torch.zeros(0, m, side, side, dtype=torch.float16)
        ious, probs = [torch.zeros(0, m)], [torch.zeros(0, len(names) + 1)]
    result = TorchPrediction(logits, torch.cat(ious), torch.cat(probs))
    foreground, background = result.probabilities[:, :-1], result.probabilities[:, -1]
    return to_prediction(
        masks, result.iou, result.low_res_logits, foreground, names, top_k, background=background
    )


def full_size_masks(
    predictor: TileDecoder,
    low_res_logits: torch.Tensor,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    out: np.ndarray,
) -> None:
    """Threshold [n, M, 4g, 4g] logits into ``out``, bool (n, M, H, W) at the original size."""
    original_size, input_size = sizes
    n, m = low_res_logits.shape[:2]
    step = max(1, UPSCALE_CHUNK_SIZE // m)
    for start in range(0, n, step):
        chunk = low_res_logits[start : start + step]
        up = predictor.model.upscale_masks(chunk, input_size, original_size)
        out[start : start + len(chunk)] = (up > 0).cpu().numpy()
