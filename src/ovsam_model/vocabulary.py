"""Vocabularies: the classes a model names objects with, each a list of synonyms, plus presets.

A class is written as one comma-separated entry, its name first: ``"mitotic cell, dividing cell"``. Each
synonym is encoded by the CLIP text tower (:func:`ovsam_model.text.encode_vocabulary`); a region takes the best-matching
synonym of a class (max over synonyms). Each class also carries a ``seen`` flag: whether the model was
trained on it, which weights the frozen-CLIP fusion (seen classes trust the trained head, unseen ones the
frozen CLIP).

Presets: ``demo`` (the synthetic dataset's classes), ``coco80`` (COCO-80 with hand-written synonyms),
``ovcoco`` (the 65-class open-vocabulary COCO split, 48 seen + 17 unseen), ``lvis1203`` (LVIS v1 canonical
names; rare classes unseen) and ``lvis1203_synonyms`` (the same with LVIS's own synonyms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from .data.splits import OVCOCO_EXCLUDED, OVCOCO_NOVEL

__all__ = [
    "COCO_OV_EXCLUDED",
    "COCO_OV_NOVEL",
    "DEMO_CLASSES",
    "Vocabulary",
    "as_vocabulary",
    "list_presets",
    "lvis_categories",
]

#: Classes of the synthetic dataset and of the ``demo`` preset, in label order.
DEMO_CLASSES: tuple[str, ...] = ("nucleus", "rod", "ring", "cluster")

#: The open-vocabulary COCO split (owned by ``ovsam_model.data.splits``): 17 novel classes and the 15 COCO
#: classes it leaves out; the other 48 of its 65 classes are base (seen).
COCO_OV_NOVEL: frozenset[str] = frozenset(OVCOCO_NOVEL)
COCO_OV_EXCLUDED: frozenset[str] = frozenset(OVCOCO_EXCLUDED)

# One LVIS v1 name holds two names separated by a space; the synonyms preset adds both as synonyms.
_LVIS_EXTRA_SYNONYMS = {
    "monitor_(computer_equipment) computer_monitor": ("monitor_(computer_equipment)", "computer_monitor"),
}

ClassEntry = str | Sequence[str]


class Vocabulary:
    """An ordered list of classes, each a list of synonyms (its name first), with a seen flag per class.

    Args:
        classes: one entry per class, either a string ``"name, synonym, ..."`` or a sequence of synonyms.
            Synonyms are stripped, inner whitespace collapsed, empty ones dropped and case-insensitive repeats
            within a class dropped.
        seen: per class, whether the model was trained on it (default: all True).

    Raises:
        ValueError: empty vocabulary, a class without any synonym, class names that repeat (compared
            case-insensitively), a synonym containing a comma (list entries), or ``seen`` of the wrong length.
    """

    def __init__(self, classes: Sequence[ClassEntry], seen: Sequence[bool] | None = None) -> None:
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise ValueError(
                f"classes must be a list of class entries such as ['nucleus', 'cell, blob'], got "
                f"{classes!r:.60}; for text (one class per line) use Vocabulary.from_text()."
            )
        parsed = [_parse_entry(entry, f"class {i + 1}") for i, entry in enumerate(classes)]
        if not parsed:
            raise ValueError(
                "The vocabulary is empty: give at least one class, e.g. ['nucleus', 'cell, blob']."
            )
        _check_unique_names(parsed)
        self._synonyms: tuple[tuple[str, ...], ...] = tuple(parsed)
        self._seen: tuple[bool, ...] = _parse_seen(seen, len(parsed))

    # ------------------------------------------------------------------ views
    @property
    def names(self) -> list[str]:
        """The name (first synonym) of each class, in class order."""
        return [synonyms[0] for synonyms in self._synonyms]

    @property
    def synonyms(self) -> list[list[str]]:
        """All synonyms of each class, name first: K lists of 1..P strings."""
        return [list(synonyms) for synonyms in self._synonyms]

    @property
    def seen(self) -> list[bool]:
        """Per class, whether the model was trained on it."""
        return list(self._seen)

    @property
    def max_synonyms(self) -> int:
        """P, the largest number of synonyms of any class (the padded width of the text embeddings)."""
        return max(len(synonyms) for synonyms in self._synonyms)

    def __len__(self) -> int:
        return len(self._synonyms)

    def __iter__(self) -> Iterator[str]:
        """Iterate over the class names."""
        return iter(self.names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._synonyms == other._synonyms and self._seen == other._seen

    def __hash__(self) -> int:  # immutable: usable as a dict key (e.g. to memoise its embeddings)
        return hash((self._synonyms, self._seen))

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:5]) + (", ..." if len(self) > 5 else "")
        return f"Vocabulary({len(self)} classes: {shown})"

    def index(self, name: str) -> int:
        """The index of the class called ``name`` (compared case-insensitively, whitespace-normalised).

        Raises:
            ValueError: if no class has that name (synonyms other than the name are not searched).
        """
        key = _normalise(name).casefold()
        for i, synonyms in enumerate(self._synonyms):
            if synonyms[0].casefold() == key:
                return i
        raise ValueError(f"{name!r} is not a class name of {self!r}.")

    # ------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict ``{"synonyms": [[str, ...], ...], "seen": [bool, ...]}`` (checkpoint metadata)."""
        return {"synonyms": self.synonyms, "seen": self.seen}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`."""
        if "synonyms" not in data:
            raise ValueError(f"A vocabulary dict needs a 'synonyms' list, got keys {sorted(data)}.")
        return cls(data["synonyms"], data.get("seen"))

    @classmethod
    def from_text(cls, text: str, seen: Sequence[bool] | None = None) -> Vocabulary:
        """Parse one class per line (``name, synonym, ...``); blank lines and lines starting with ``#`` are
        skipped. ``seen`` (optional) has one flag per class line.

        Raises:
            ValueError: as the constructor; a line without any synonym is named by its line number.
        """
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            entries.append(_parse_entry(stripped, f"line {number}"))
        return cls(entries, seen)

    def to_text(self) -> str:
        """One class per line, synonyms comma-separated (the ``seen`` flags are not part of the text)."""
        return "".join(", ".join(synonyms) + "\n" for synonyms in self._synonyms)

    @classmethod
    def preset(cls, name: str) -> Vocabulary:
        """A shipped vocabulary by name; see :func:`list_presets`."""
        builder = _PRESETS.get(name.strip().lower())
        if builder is None:
            raise ValueError(f"Unknown vocabulary preset {name!r}; choose one of {list_presets()}.")
        return builder()


def as_vocabulary(value: Vocabulary | str | Sequence[ClassEntry]) -> Vocabulary:
    """The one coercion every API that takes a vocabulary uses: a :class:`Vocabulary` as it is, a text as one
    class per line (so ``"cat"`` is one class, not three), a list or tuple as one entry per class.

    Raises:
        ValueError: anything else (None, a number, ...), or what the constructor refuses.
    """
    if isinstance(value, Vocabulary):
        return value
    if isinstance(value, str):
        return Vocabulary.from_text(value)
    if isinstance(value, Sequence):
        return Vocabulary(value)
    tolist = getattr(value, "tolist", None)  # a numpy array or pandas Series of names
    if callable(tolist) and isinstance(entries := tolist(), list):
        return Vocabulary(entries)
    raise ValueError(
        f"A vocabulary is a list of class entries (['nucleus', 'cell, blob']), a text with one class per "
        f"line, or a Vocabulary; got {type(value).__name__} {value!r:.60}."
    )


def list_presets() -> list[str]:
    """Names accepted by :meth:`Vocabulary.preset`."""
    return list(_PRESETS)


# ---------------------------------------------------------------------- parsing
def _normalise(synonym: str) -> str:
    return " ".join(synonym.split())


def _parse_entry(entry: ClassEntry, where: str) -> tuple[str, ...]:
    """Split one class entry into its synonyms: stripped, deduplicated (case-insensitively), order kept."""
    if isinstance(entry, str):
        pieces = entry.split(",")
    elif isinstance(entry, Sequence) and all(isinstance(piece, str) for piece in entry):
        pieces = list(entry)
        if any("," in piece for piece in pieces):
            raise ValueError(f"{where} ({list(entry)!r}): a synonym may not contain a comma.")
    else:
        raise ValueError(
            f"{where}: expected a string 'name, synonym, ...' or a list of strings, got {entry!r}."
        )
    synonyms: dict[str, str] = {}
    for piece in pieces:
        synonym = _normalise(piece)
        if synonym:
            synonyms.setdefault(synonym.casefold(), synonym)
    if not synonyms:
        raise ValueError(f"{where} ({entry!r}) has no class name: write 'name' or 'name, synonym, ...'.")
    return tuple(synonyms.values())


def _check_unique_names(classes: Sequence[Sequence[str]]) -> None:
    counts: dict[str, list[str]] = {}
    for synonyms in classes:
        counts.setdefault(synonyms[0].casefold(), []).append(synonyms[0])
    repeated = [spellings[0] for spellings in counts.values() if len(spellings) > 1]
    if repeated:
        raise ValueError(f"Duplicate class names (compared case-insensitively): {repeated}.")


def _parse_seen(seen: Sequence[bool] | None, num_classes: int) -> tuple[bool, ...]:
    if seen is None:
        return (True,) * num_classes
    flags = tuple(bool(flag) for flag in seen)
    if len(flags) != num_classes:
        raise ValueError(f"seen has {len(flags)} flags for {num_classes} classes.")
    return flags


# ---------------------------------------------------------------------- presets
def _read_preset(filename: str) -> str:
    return resources.files("ovsam_model").joinpath("presets", filename).read_text(encoding="utf-8")


@cache
def lvis_categories() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """The 1203 LVIS v1 categories in id order as ``(name, frequency, other_synonyms)``.

    Names and synonyms are LVIS's own strings (underscores kept); frequency is ``"r"``, ``"c"`` or ``"f"``.
    """
    categories: list[tuple[str, str, tuple[str, ...]]] = []
    for line in _read_preset("lvis_v1.txt").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        number, frequency, name, others = line.split("|")
        if int(number) != len(categories) + 1:
            raise RuntimeError(f"presets/lvis_v1.txt is out of order at category {number}.")
        categories.append((name, frequency, tuple(s for s in others.split(",") if s)))
    return tuple(categories)


def _lvis_synonym(raw: str) -> str:
    # Only underscores become spaces: "tape_(sticky_cloth_or_paper)" stays one synonym (the official code
    # split on "_or_" and "/" and got "tape (sticky cloth" and "paper)").
    return _normalise(raw.replace("_", " "))


def _lvis(with_synonyms: bool) -> Vocabulary:
    classes = []
    for name, _, others in lvis_categories():
        raw = [name, *_LVIS_EXTRA_SYNONYMS.get(name, ()), *others] if with_synonyms else [name]
        classes.append([_lvis_synonym(piece) for piece in raw])
    return Vocabulary(classes, seen=[frequency != "r" for _, frequency, _ in lvis_categories()])


def _coco80() -> Vocabulary:
    return Vocabulary.from_text(_read_preset("coco80.txt"))


def _ovcoco() -> Vocabulary:
    coco = _coco80()
    kept = [synonyms for synonyms in coco.synonyms if synonyms[0] not in COCO_OV_EXCLUDED]
    return Vocabulary(kept, seen=[synonyms[0] not in COCO_OV_NOVEL for synonyms in kept])


_PRESETS: dict[str, Callable[[], Vocabulary]] = {
    "demo": lambda: Vocabulary(DEMO_CLASSES),
    "coco80": _coco80,
    "ovcoco": _ovcoco,
    "lvis1203": lambda: _lvis(with_synonyms=False),
    "lvis1203_synonyms": lambda: _lvis(with_synonyms=True),
}
