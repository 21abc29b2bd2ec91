"""Vocabulary parsing and presets, prompt templates, and text embeddings with their disk cache."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

from ovsam_model.hub import CACHE_ENV as CACHE_DIR_ENV
from ovsam_model.templates import SIMPLE_TEMPLATES, VILD_TEMPLATES, check_templates
from ovsam_model.tensorfile import read_safetensors
from ovsam_model.text import (
    TextEmbeddingCache,
    TextEncoder,
    default_text_cache_dir,
    encode_vocabulary,
)
from ovsam_model.vocabulary import DEMO_CLASSES, Vocabulary, as_vocabulary, list_presets

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip
OV_COCO_BASE = [
    "person", "bicycle", "car", "motorcycle", "truck", "boat", "bench", "bird", "horse", "sheep", "zebra",
    "giraffe", "backpack", "handbag", "skis", "kite", "surfboard", "bottle", "spoon", "bowl", "banana",
    "apple", "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed", "tv", "laptop", "remote",
    "microwave", "oven", "refrigerator", "book", "clock", "vase", "toothbrush", "train", "bear", "suitcase",
    "frisbee", "fork", "sandwich", "toilet", "mouse", "toaster",
]  # fmt: skip
OV_COCO_NOVEL = [
    "bus", "dog", "cow", "elephant", "umbrella", "tie", "skateboard", "cup", "knife", "cake", "couch",
    "keyboard", "sink", "scissors", "airplane", "cat", "snowboard",
]  # fmt: skip


def count_text_calls(encoder: TextEncoder) -> dict[str, int]:
    """Count the runs of the text transformer and the prompts it saw (a forward hook)."""
    counts = {"calls": 0, "prompts": 0}

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        counts["calls"] += 1
        counts["prompts"] += inputs[0].shape[0]

    encoder.model.transformer.register_forward_hook(hook)
    return counts


class OnlyEncodeText(torch.nn.Module):
    """A model exposing nothing of its text tower but ``encode_text`` (the general path)."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)


# ----------------------------------------------------------------------------- templates
def test_vild_templates_are_the_14_official_ones() -> None:
    assert len(VILD_TEMPLATES) == 14 == len(set(VILD_TEMPLATES))
    assert VILD_TEMPLATES[:5] == (
        "a photo of a {}.",
        "This is a photo of a {}",
        "There is a {} in the scene",
        "There is the {} in the scene",
        "a photo of a {} in the scene",
    )
    for size in ("small", "medium", "large"):
        assert f"a photo of a {size} {{}}." in VILD_TEMPLATES
        assert f"This is a photo of a {size} {{}}." in VILD_TEMPLATES
        assert f"There is a {size} {{}} in the scene." in VILD_TEMPLATES
    assert check_templates(list(SIMPLE_TEMPLATES)) == SIMPLE_TEMPLATES


@pytest.mark.parametrize("templates", [[], "a photo of a {}.", ["no slot"], ["{} and {}"], ["a {0} {}"]])
def test_bad_templates_raise(templates: object) -> None:
    with pytest.raises(ValueError):
        check_templates(templates)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- vocabulary
def test_entries_are_split_into_stripped_synonyms() -> None:
    vocab = Vocabulary(["  mitotic cell ,dividing   cell,, ", "nucleus", ["rod", " bacillus "], "Ring, ring"])
    assert vocab.names == ["mitotic cell", "nucleus", "rod", "Ring"]
    assert vocab.synonyms == [["mitotic cell", "dividing cell"], ["nucleus"], ["rod", "bacillus"], ["Ring"]]
    assert vocab.seen == [True] * 4
    assert len(vocab) == 4 and list(vocab) == vocab.names and vocab.max_synonyms == 2
    assert vocab.index("RING") == 3 and vocab.index(" mitotic  cell ") == 0
    with pytest.raises(ValueError, match="not a class name"):
        vocab.index("bacillus")


def test_empty_vocabulary_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        Vocabulary([])
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.from_text("# only a comment\n\n")


def test_duplicate_names_are_named() -> None:
    with pytest.raises(ValueError, match="Duplicate class names.*'cell'.*'rod'"):
        Vocabulary(["cell", "rod", "Cell , blob", "ring", " rod"])


def test_entry_without_synonym_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 3"):
        Vocabulary.from_text("nucleus\n# comment\n , ,\nrod\n")
    with pytest.raises(ValueError, match="class 2"):
        Vocabulary(["nucleus", " , "])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="seen has 1 flags for 2 classes"):
        Vocabulary(["a", "b"], seen=[True])
    with pytest.raises(ValueError, match="comma"):
        Vocabulary([["a, b"]])
    with pytest.raises(ValueError, match="from_text"):
        Vocabulary("nucleus, rod")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown vocabulary preset"):
        Vocabulary.preset("imagenet")


def test_text_round_trip() -> None:
    text = "# my classes\nnucleus, cell nucleus\n\n  rod  \nring,annulus, hoop\n"
    vocab = Vocabulary.from_text(text, seen=[True, False, True])
    assert vocab.to_text() == "nucleus, cell nucleus\nrod\nring, annulus, hoop\n"
    assert Vocabulary.from_text(vocab.to_text(), seen=vocab.seen) == vocab
    assert Vocabulary.from_text(vocab.to_text()) != vocab  # the text does not carry the seen flags
    assert as_vocabulary(text) == Vocabulary.from_text(text) == as_vocabulary(vocab.synonyms)
    assert as_vocabulary(vocab) is vocab


def test_dict_round_trip_is_json() -> None:
    vocab = Vocabulary(["nucleus, cell nucleus", "rod"], seen=[False, True])
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab and hash(restored) == hash(vocab) and restored.seen == [False, True]
    with pytest.raises(ValueError, match="synonyms"):
        Vocabulary.from_dict({"classes": ["a"]})


# ------------------------------------------------------------------------------- presets
def test_preset_list_and_demo() -> None:
    assert {"demo", "coco80", "ovcoco", "lvis1203"} <= set(list_presets())
    assert Vocabulary.preset("demo").names == list(DEMO_CLASSES) == ["nucleus", "rod", "ring", "cluster"]


def test_coco_presets() -> None:
    coco = Vocabulary.preset("coco80")
    assert coco.names == COCO80 and all(coco.seen)
    assert "child" in coco.synonyms[0] and coco.synonyms[coco.index("remote")][1:] == [
        "tv remote",
        "remote control",
    ]
    assert "orange fruit" in coco.synonyms[coco.index("orange")]
    ov = Vocabulary.preset("ovcoco")
    assert len(ov) == 65 and sum(ov.seen) == 48
    assert ov.names == [name for name in COCO80 if name in OV_COCO_BASE + OV_COCO_NOVEL]
    assert sorted(n for n, s in zip(ov.names, ov.seen) if s) == sorted(OV_COCO_BASE)
    assert sorted(n for n, s in zip(ov.names, ov.seen) if not s) == sorted(OV_COCO_NOVEL)


def test_lvis_presets() -> None:
    lvis = Vocabulary.preset("lvis1203")
    assert len(lvis) == 1203 == len({name.casefold() for name in lvis.names})
    assert lvis.names[0] == "aerosol can" and lvis.names[-1] == "zucchini"
    assert not any("_" in name for name in lvis.names)
    assert sum(lvis.seen) == 866  # frequent + common; the 337 rare classes are unseen
    tape = lvis.index("tape (sticky cloth or paper)")
    assert lvis.synonyms[tape] == ["tape (sticky cloth or paper)"] and lvis.max_synonyms == 1
    assert not lvis.seen[lvis.index("applesauce")] and lvis.seen[lvis.index("apple")]
    rich = Vocabulary.preset("lvis1203_synonyms")
    assert rich.names == lvis.names and rich.seen == lvis.seen
    assert rich.synonyms[tape] == ["tape (sticky cloth or paper)"]
    assert rich.synonyms[rich.index("trash can")][:2] == ["trash can", "garbage can"]


# --------------------------------------------------------------------------- text tower
def test_encode_matches_open_clip_zero_shot_classifier(
    tiny_text_encoder: TextEncoder, tmp_path: Path
) -> None:
    classnames = ["nucleus", "rod", "ring", "cluster", "mitotic cell"]
    reference = open_clip.build_zero_shot_classifier(
        tiny_text_encoder.model, tiny_text_encoder.tokenizer, classnames, VILD_TEMPLATES, device="cpu"
    )  # [D, K]
    for cache_dir, use_cache in ((tmp_path, True), (tmp_path, True), (None, False)):
        ours = encode_vocabulary(
            classnames, tiny_text_encoder, VILD_TEMPLATES, cache_dir, use_cache=use_cache
        )
        assert ours.shape == (5, 1, reference.shape[0]) and ours.dtype == torch.float32
        torch.testing.assert_close(ours[:, 0], reference.T, atol=1e-6, rtol=0)


def test_padding_shape_norms_and_max_over_synonyms(tiny_text_encoder: TextEncoder, tmp_path: Path) -> None:
    vocab = Vocabulary(["cell, blob, nucleus", "rod", "ring, annulus"])
    embeddings = encode_vocabulary(vocab, tiny_text_encoder, cache_dir=tmp_path)
    assert embeddings.shape == (3, 3, 32) and embeddings.device.type == "cpu"
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3, 3))
    single = encode_vocabulary(
        ["cell", "blob", "nucleus", "rod", "annulus"], tiny_text_encoder, cache_dir=tmp_path
    )
    torch.testing.assert_close(embeddings[0], single[:3, 0])
    assert torch.equal(embeddings[1], single[3, 0].expand(3, -1))  # padded with synonym 0
    assert torch.equal(embeddings[2, 2], embeddings[2, 0])
    regions = torch.nn.functional.normalize(torch.randn(7, 32), dim=-1)
    best = torch.einsum("nd,kpd->nkp", regions, embeddings).amax(dim=-1)
    unpadded = [regions @ single[[0, 1, 2], 0].T, regions @ single[[3], 0].T, None]
    torch.testing.assert_close(best[:, 0], unpadded[0].amax(dim=1))  # type: ignore[union-attr]
    torch.testing.assert_close(best[:, 1], unpadded[1].amax(dim=1))  # type: ignore[union-attr]


def test_encode_batches_restore_modes_and_validate(tiny_text_encoder: TextEncoder) -> None:
    texts = [f"a photo of object {i}" for i in range(5)]
    model = tiny_text_encoder.model.train()
    model.visual.eval()  # a frozen part stays in eval mode while the rest trains
    whole = tiny_text_encoder.encode(texts)
    torch.testing.assert_close(tiny_text_encoder.encode(texts, batch_size=2), whole)
    assert whole.shape == (5, 32) and not whole.requires_grad
    torch.testing.assert_close(whole.norm(dim=-1), torch.ones(5))
    assert model.training and model.transformer.training and not model.visual.training
    with pytest.raises(ValueError, match="empty"):
        tiny_text_encoder.encode([])
    with pytest.raises(ValueError, match="not a single string"):
        tiny_text_encoder.encode("a photo")
    with pytest.raises(ValueError, match="encode_text"):
        TextEncoder(torch.nn.Linear(2, 2), tiny_text_encoder.tokenizer)


def test_short_context_shortcut_matches_the_general_path(tiny_text_encoder: TextEncoder) -> None:
    texts = ["a photo of a nucleus.", "There is a large mitotic cell with two nuclei in the scene."]
    short = tiny_text_encoder.encode(texts)
    assert tiny_text_encoder._short_context is True  # an open_clip CLIP: the shortcut was verified and used
    general = TextEncoder(OnlyEncodeText(tiny_text_encoder.model), tiny_text_encoder.tokenizer)
    torch.testing.assert_close(general.encode(texts), short, atol=1e-6, rtol=0)
    assert general._short_context is False


def test_fingerprint_is_the_name_or_a_weight_hash(make_tiny_clip) -> None:
    model, tokenizer = make_tiny_clip(0)
    assert TextEncoder(model, tokenizer, name="RN50x16/openai").fingerprint == "RN50x16/openai"
    encoder = TextEncoder(model, tokenizer)
    first = encoder.fingerprint
    assert first.startswith("sha256-") and first == TextEncoder(*make_tiny_clip(0)).fingerprint
    with torch.no_grad():
        model.visual.attnpool.c_proj.weight.add_(1.0)  # the image tower does not key text embeddings
    assert encoder.fingerprint == first
    with torch.no_grad():
        model.ln_final.weight.add_(0.5)
    assert encoder.fingerprint != first


def test_second_call_hits_the_cache(tiny_text_encoder: TextEncoder, tmp_path: Path) -> None:
    counts = count_text_calls(tiny_text_encoder)
    vocab = Vocabulary(["nucleus, cell nucleus", "rod", "ring"])
    first = encode_vocabulary(vocab, tiny_text_encoder, cache_dir=tmp_path)
    assert counts["calls"] > 0 and counts["prompts"] >= 4 * len(VILD_TEMPLATES)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4 and not list(tmp_path.rglob("*.tmp"))
    counts.update(calls=0, prompts=0)
    second = encode_vocabulary(vocab, tiny_text_encoder, cache_dir=tmp_path)
    assert counts["calls"] == 0 and torch.equal(first, second)
    encode_vocabulary(["rod", "ring", "cluster"], tiny_text_encoder, cache_dir=tmp_path)
    assert counts["prompts"] == len(VILD_TEMPLATES)  # only the new synonym was encoded
    counts.update(calls=0, prompts=0)
    encode_vocabulary(vocab, tiny_text_encoder, SIMPLE_TEMPLATES, cache_dir=tmp_path)
    assert counts["prompts"] == 4  # other templates, other cache entries


def test_cache_is_isolated_between_towers(make_tiny_clip, tmp_path: Path) -> None:
    vocab = ["nucleus", "rod, bacillus"]
    tower_a, tower_b = TextEncoder(*make_tiny_clip(1)), TextEncoder(*make_tiny_clip(2))
    assert tower_a.fingerprint != tower_b.fingerprint
    from_a = encode_vocabulary(vocab, tower_a, cache_dir=tmp_path)
    from_b = encode_vocabulary(vocab, tower_b, cache_dir=tmp_path)
    torch.testing.assert_close(from_b, encode_vocabulary(vocab, tower_b, use_cache=False))
    assert not torch.allclose(from_a, from_b)


def test_default_cache_dir_and_unreadable_files(
    tiny_text_encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_text_cache_dir() == tmp_path / "text"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_text_cache_dir() == Path.home() / ".cache" / "ovsam" / "text"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    expected = encode_vocabulary(["nucleus"], tiny_text_encoder)
    cache = TextEmbeddingCache(tmp_path / "text", tiny_text_encoder.fingerprint, VILD_TEMPLATES)
    assert cache.path("nucleus").is_file()
    tensors, metadata = read_safetensors(cache.path("nucleus"))
    assert metadata["text"] == "nucleus" and tensors["embedding"].shape == (32,) and "crc32" in metadata
    cache.path("nucleus").write_bytes(b"not a safetensors file")
    torch.testing.assert_close(encode_vocabulary(["nucleus"], tiny_text_encoder), expected)
    rewritten = cache.get("nucleus")
    assert rewritten is not None
    torch.testing.assert_close(rewritten, expected[0, 0])
    data = bytearray(cache.path("nucleus").read_bytes())
    data[-3] ^= 0xFF  # a flipped byte in the embedding: detected, a miss, recomputed
    cache.path("nucleus").write_bytes(bytes(data))
    assert cache.get("nucleus") is None
    torch.testing.assert_close(encode_vocabulary(["nucleus"], tiny_text_encoder), expected)
