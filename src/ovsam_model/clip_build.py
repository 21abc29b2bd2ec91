"""Creating open_clip models: the one place that calls ``open_clip.create_model`` for OV-SAM and the baselines."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import open_clip
from torch import nn

from .clip_configs import register_clip_configs
from .hub import clip_weights_error, open_clip_cache_dir

RANDOM_TAGS = (None, "", "none")  # ``pretrained`` values that mean random CLIP weights
_OPEN_CLIP_DIR = f"{os.sep}open_clip{os.sep}"


class _RandomInitFilter(logging.Filter):
    """Drops open_clip's "Model initialized randomly" warning, only where one thread logs it.

    open_clip logs through the root logger (``logging.warning``), so there is no open_clip logger to quiet;
    a filter keyed on the thread, the message and open_clip's source file leaves every other record (other
    threads, other libraries, other open_clip messages) and every logger's level untouched.
    """

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.thread == self.thread
            and _OPEN_CLIP_DIR in record.pathname
            and "initialized randomly" in record.getMessage()
        )


@contextmanager
def quiet_random_init(quiet: bool = True) -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning in this thread where random CLIP weights are
    intended (the tiny config; the demo model, whose weights come from its own checkpoint right after)."""
    if not quiet:
        yield
        return
    root = logging.getLogger()
    record_filter = _RandomInitFilter(threading.get_ident())
    root.addFilter(record_filter)
    try:
        yield
    finally:
        root.removeFilter(record_filter)


def create_clip(model_name: str, pretrained: str | None) -> tuple[nn.Module, Any]:
    """(open_clip model on the CPU, its tokenizer); ``pretrained``: an open_clip tag, a local file, or one of
    ``RANDOM_TAGS`` for random weights (quietly).

    Raises:
        FileNotFoundError: open_clip could not find or download the named weights (says how to provide them).
    """
    register_clip_configs()
    tag = None if pretrained in RANDOM_TAGS else pretrained
    try:
        # OpenAI's weights were trained with QuickGELU in the text tower; open_clip wants to be told.
        with quiet_random_init(tag is None):
            model = open_clip.create_model(
                model_name,
                pretrained=tag,
                device="cpu",
                force_quick_gelu=tag == "openai",
                cache_dir=open_clip_cache_dir(model_name, tag),  # weights fetched by ovsam_model.download
            )
    except RuntimeError as error:
        if tag is None:
            raise
        raise clip_weights_error(model_name, tag, error) from error
    return model, open_clip.get_tokenizer(model_name)
