"""Prompt templates that turn a class name into sentences for the CLIP text tower.

Each template holds one ``{}`` that ``str.format`` fills with a synonym ("a photo of a {}." -> "a photo of a
nucleus."). The embedding of a synonym is the renormalised mean over its templates (see
:func:`ovsam_model.text.encode_vocabulary`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["VILD_TEMPLATES", "SIMPLE_TEMPLATES", "check_templates"]

#: The 14 ViLD templates (as used by FC-CLIP and by the official OV-SAM ``tools/gen_cls.py``). The first five
#: lack full stops in the original list too; keep them so, the released weights were trained with these.
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

#: A single plain template, for quick experiments and for models whose text tower was trained from scratch.
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Validate templates and return them as a tuple.

    Raises:
        ValueError: if ``templates`` is empty, is a single string, or a template lacks exactly one ``{}``.
    """
    if isinstance(templates, str):
        raise ValueError(f"templates must be a sequence of strings, not the single string {templates!r}")
    templates = tuple(templates)
    if not templates:
        raise ValueError("templates is empty: give at least one template such as 'a photo of a {}.'")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"each template must be a string with exactly one '{{}}', got {template!r}")
        try:
            template.format("x")
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f"template {template!r} has braces other than '{{}}': {error}") from None
    return templates
