"""Text embeddings of vocabularies: an open_clip text tower behind :class:`TextEncoder`, a disk cache.

Recipe (as the official ``tools/gen_cls.py``): every synonym is put into each template, each prompt is encoded
and L2-normalised, the prompts of a synonym are averaged and the mean renormalised; classes are stacked to
``[K, P, D]``, padding classes with fewer than P synonyms by repeating their synonym 0 (which leaves the max
over synonyms unchanged).

Cache: one small checksummed safetensors file per (text model fingerprint, templates, synonym) under
``$OVSAM_CACHE_DIR/text`` (default ``~/.cache/ovsam/text``), written atomically, no pickle; editing a
vocabulary re-encodes only the new synonyms.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hub import cache_root
from .templates import VILD_TEMPLATES, check_templates
from .tensorfile import read_safetensors, write_safetensors
from .vocabulary import ClassEntry, Vocabulary, as_vocabulary

__all__ = [
    "TextEncoder",
    "TextEmbeddingCache",
    "default_text_cache_dir",
    "encode_synonyms",
    "encode_vocabulary",
    "text_tower_digest",
]

logger = logging.getLogger(__name__)


Tokenizer = Callable[[list[str]], torch.Tensor]


class TextEncoder:
    """Encodes sentences with the text tower of an open_clip CLIP model.

    Args:
        clip_model: an open_clip ``CLIP`` or ``CustomTextCLIP``: anything with ``encode_text(tokens)``
            returning ``[N, D]``.
        tokenizer: maps N strings to int64 tokens ``[N, context_length]``; ``open_clip.get_tokenizer(name)``.
        name: a stable identity for pretrained towers, e.g. ``"RN50x16/openai"``; it keys the embedding cache.
            Leave it None for random or self-trained towers: the key is then a hash of the tower's weights.
    """

    def __init__(self, clip_model: nn.Module, tokenizer: Tokenizer, name: str | None = None) -> None:
        if not callable(getattr(clip_model, "encode_text", None)):
            raise ValueError(
                f"clip_model must have an encode_text() method, got {type(clip_model).__name__}."
            )
        self.model = clip_model
        self.tokenizer = tokenizer
        self.name = name
        self._short_context: bool | None = None  # None: not yet checked against encode_text()

    @property
    def device(self) -> torch.device:
        """Where the text tower's weights live (tokens are sent there)."""
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def fingerprint(self) -> str:
        """``name`` if given, else ``"sha256-<16 hex>"`` of the text tower's weights and tokenizer.

        The hash is recomputed on each access (about a second for RN50x16), so a tower that is being
        trained never reuses stale cache entries.
        """
        if self.name:
            return self.name
        return "sha256-" + text_tower_digest(self.model, self.tokenizer)[:16]

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Encode sentences: float32 ``[N, D]`` on the CPU, each row L2-normalised.

        Runs under ``torch.no_grad()`` with the model temporarily in eval mode (each module's own mode is
        restored afterwards). For open_clip's causal text transformer, tokens after the longest prompt's end
        token cannot change the result, so they are cut (same numbers, far less work for short prompts);
        this shortcut is checked once against ``encode_text()`` and dropped if they disagree.
        """
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not a single string.")
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        device = self.device
        chunks = []
        with torch.no_grad(), _eval_mode(self.model):
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start : start + batch_size]).to(device)
                features = self._encode_tokens(tokens)
                chunks.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks)

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 ``[N, context_length]`` -> unnormalised ``[N, D]`` in the model's dtype."""
        if self._short_context is None:
            self._short_context = _short_context_agrees(self.model, tokens[:1])
        if self._short_context:
            return _encode_text_short_context(self.model, tokens)
        return self.model.encode_text(tokens)  # type: ignore[operator]


def _encode_text_short_context(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip ``CLIP.encode_text`` on the tokens up to the last end token (the highest id, as open_clip's
    ``argmax`` pooling assumes); the causal mask makes later positions irrelevant to the pooled feature."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Module) else x @ projection


def _short_context_agrees(model: nn.Module, tokens: torch.Tensor) -> bool:
    """Whether ``model`` is an open_clip CLIP with a causal, argmax-pooled text tower on which the
    short-context forward reproduces ``encode_text`` (checked on ``tokens``)."""
    causal = isinstance(getattr(model, "attn_mask", None), torch.Tensor)
    if not causal or getattr(model, "text_pool_type", None) != "argmax":
        return False
    try:
        short = _encode_text_short_context(model, tokens).float()
        full = model.encode_text(tokens).float()  # type: ignore[operator]
    except (AttributeError, RuntimeError, TypeError) as error:
        logger.debug("Short-context text encoding unavailable: %s", error)
        return False
    tolerance = 1e-5 * float(full.abs().max())
    agrees = short.shape == full.shape and torch.allclose(short, full, rtol=1e-3, atol=tolerance)
    if not agrees:
        logger.debug("Short-context text encoding disagrees with encode_text(); using encode_text().")
    return agrees


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def text_tower_digest(model: nn.Module, tokenizer: object = None) -> str:
    """sha256 (hex) of the state-dict tensors outside the image tower, and of the tokenizer's kind."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        parts = key.split(".")
        if "visual" in parts or parts[-1] in ("logit_scale", "logit_bias"):
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    digest.update(f"{type(tokenizer).__name__}|{getattr(tokenizer, 'context_length', '')}".encode())
    return digest.hexdigest()


def default_text_cache_dir() -> Path:
    """``cache_root() / "text"``: ``$OVSAM_CACHE_DIR/text`` if the variable is set, else ``~/.cache/ovsam/text``."""
    return cache_root() / "text"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TextEmbeddingCache:
    """Per-synonym embeddings on disk: ``root/<model>/<templates hash>/<sha256(synonym)>.safetensors``.

    Each file is a checksummed safetensors file (``ovsam_model.tensorfile``, crc32) holding the float32 ``[D]``
    ``embedding`` with the synonym in its metadata; a file that is damaged, cannot be read, or belongs to
    another synonym counts as a miss and is rewritten.
    """

    def __init__(self, root: str | Path, fingerprint: str, templates: Sequence[str]) -> None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", fingerprint)[:64]
        templates_hash = _sha256("\n".join(templates))[:16]
        self.directory = Path(root).expanduser() / f"{slug}-{_sha256(fingerprint)[:8]}" / templates_hash

    def path(self, synonym: str) -> Path:
        return self.directory / f"{_sha256(synonym)[:32]}.safetensors"

    def get(self, synonym: str) -> torch.Tensor | None:
        """The cached float32 ``[D]`` embedding of ``synonym``, or None."""
        path = self.path(synonym)
        if not path.is_file():
            return None
        try:
            tensors, metadata = read_safetensors(path)
        except ValueError as error:  # a truncated or changed file is a miss, never a crash
            logger.warning("Ignoring a damaged text-embedding cache file (it will be rewritten): %s", error)
            return None
        embedding = tensors.get("embedding")
        if metadata.get("text") != synonym or embedding is None or embedding.ndim != 1:
            return None
        return embedding.float()

    def put(self, synonym: str, embedding: torch.Tensor) -> None:
        """Store a ``[D]`` embedding atomically (``ovsam_model.tensorfile``); I/O errors only warn."""
        try:
            tensor = embedding.detach().float().cpu().contiguous()
            write_safetensors(self.path(synonym), {"embedding": tensor}, {"text": synonym}, algorithm="crc32")
        except OSError as error:
            logger.warning("Could not write the text-embedding cache in %s: %s", self.directory, error)


def encode_synonyms(
    synonyms: Sequence[str],
    text_encoder: TextEncoder,
    templates: Sequence[str] = VILD_TEMPLATES,
    cache: TextEmbeddingCache | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Template-ensembled embeddings of S synonyms: float32 ``[S, D]`` on the CPU, unit rows.

    Synonyms found in ``cache`` are not encoded; the text tower runs only on the others.
    """
    templates = check_templates(templates)
    unique = list(dict.fromkeys(synonyms))
    if not unique:
        raise ValueError("synonyms is empty.")
    found: dict[str, torch.Tensor] = {}
    if cache is not None:
        for synonym in unique:
            hit = cache.get(synonym)
            if hit is not None:
                found[synonym] = hit
    missing = [synonym for synonym in unique if synonym not in found]
    if missing:
        prompts = [template.format(synonym) for synonym in missing for template in templates]
        prompt_embeddings = text_encoder.encode(prompts, batch_size=batch_size)
        means = prompt_embeddings.reshape(len(missing), len(templates), -1).mean(dim=1)
        for synonym, embedding in zip(missing, F.normalize(means, dim=-1)):
            found[synonym] = embedding
            if cache is not None:
                cache.put(synonym, embedding)
    return torch.stack([found[synonym] for synonym in synonyms])


def encode_vocabulary(
    vocab: Vocabulary | str | Sequence[ClassEntry],
    text_encoder: TextEncoder,
    templates: Sequence[str] = VILD_TEMPLATES,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
    batch_size: int = 256,
) -> torch.Tensor:
    """Text embeddings of a vocabulary: float32 ``[K, P, D]`` on the CPU, every ``[k, p]`` of unit norm.

    K classes, P = ``vocab.max_synonyms``; class k's row p is its synonym p, or its synonym 0 where it has
    fewer than P synonyms. ``cache_dir`` defaults to :func:`default_text_cache_dir`; ``use_cache=False``
    neither reads nor writes the disk.
    """
    vocab = as_vocabulary(vocab)
    templates = check_templates(templates)
    cache = None
    if use_cache:
        root = Path(cache_dir) if cache_dir is not None else default_text_cache_dir()
        cache = TextEmbeddingCache(root, text_encoder.fingerprint, templates)
    unique = list(dict.fromkeys(s for synonyms in vocab.synonyms for s in synonyms))
    table = encode_synonyms(unique, text_encoder, templates, cache, batch_size)
    row = {synonym: i for i, synonym in enumerate(unique)}
    width = vocab.max_synonyms
    index = [
        [row[s] for s in synonyms] + [row[synonyms[0]]] * (width - len(synonyms))
        for synonyms in vocab.synonyms
    ]
    return table[torch.tensor(index)]


def vocabulary_embeddings(
    vocabulary: Vocabulary | str | Sequence[ClassEntry],
    text_encoder: TextEncoder,
    text_embeddings: torch.Tensor | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Vocabulary, torch.Tensor]:
    """(Vocabulary, float32 [K, P, D] text embeddings) for a predictor's ``set_vocabulary``.

    vocabulary: anything :func:`ovsam_model.vocabulary.as_vocabulary` takes (a text is one class per line);
    text_embeddings: precomputed [K, P, D] (default: computed with ``text_encoder``, cached on disk); they
    must have one row per class and the text tower's width.
    """
    vocabulary = as_vocabulary(vocabulary)
    if text_embeddings is None:
        return vocabulary, encode_vocabulary(vocabulary, text_encoder, cache_dir=cache_dir).float()
    if not isinstance(text_embeddings, torch.Tensor):
        text_embeddings = torch.as_tensor(np.asarray(text_embeddings))
    if text_embeddings.ndim != 3 or text_embeddings.shape[0] != len(vocabulary):
        raise ValueError(
            f"text_embeddings must be [K, P, D] with K = {len(vocabulary)} classes, got "
            f"{tuple(text_embeddings.shape)}; compute them with encode_vocabulary(vocabulary, model.text_encoder)."
        )
    if not torch.isfinite(text_embeddings).all():
        raise ValueError(
            "text_embeddings hold NaN or infinite values; recompute them with encode_vocabulary."
        )
    return vocabulary, text_embeddings.float()
