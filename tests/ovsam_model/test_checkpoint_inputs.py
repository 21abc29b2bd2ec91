"""Bad files and paths given to ``build_ovsam`` and the checkpoint loader: one table of (bad input -> error type
and message fragment), so new cases join it; plus the integrity of our own format (safetensors, checksum, no
pickle) and the older format it still reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ovsam_model.build import assemble, build_ovsam
from ovsam_model.checkpoint import (
    FORMAT_KEY,
    is_own_checkpoint,
    load_pretrained_sources,
    read_own_checkpoint,
    save_checkpoint,
    write_safetensors,
)
from ovsam_model.checkpoint.files import is_safetensors
from ovsam_model.config import load_config
from ovsam_model.modeling.ovsam import OVSAM


@pytest.fixture(scope="module")
def model() -> OVSAM:
    torch.manual_seed(0)
    return assemble(load_config("tiny")).eval()


def _v1(model: OVSAM, **changes) -> dict:
    """One of our checkpoints in the older format (version 1: a torch.save dict)."""
    data = {
        FORMAT_KEY: 1,
        "config": model.config.to_dict() | {"clip": model.config.to_dict()["clip"] | {"pretrained": None}},
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "vocabulary": None,
        "text_embeddings": None,
        "metadata": {},
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def _flip_byte(path: Path, offset_from_end: int = 100) -> Path:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))
    return path


class _Payload:
    """Any class: unpickling it would need code, which weights_only refuses."""


# Each maker writes the bad input under ``tmp`` and returns what to pass; ``call`` says how it is used.
def _missing(tmp, model):
    return "/path/that/does/not/exist.pt"


def _folder(tmp, model):
    (tmp / "runs").mkdir()
    return tmp / "runs"


def _bare_state_dict(tmp, model):
    torch.save(model.state_dict(), tmp / "bare.pt")
    return tmp / "bare.pt"


def _without_config(tmp, model):
    torch.save(_v1(model, config=...), tmp / "no_config.pt")
    return tmp / "no_config.pt"


def _without_state_dict(tmp, model):
    torch.save(_v1(model, state_dict=...), tmp / "no_state.pt")
    return tmp / "no_state.pt"


def _broken_config(tmp, model):
    torch.save(_v1(model, config={"name": "x", "colour": "blue"}), tmp / "bad_config.pt")
    return tmp / "bad_config.pt"


def _future_version(tmp, model):
    torch.save(_v1(model) | {FORMAT_KEY: 99}, tmp / "future.pt")
    return tmp / "future.pt"


def _flipped(tmp, model):
    return _flip_byte(save_checkpoint(model, tmp / "model.safetensors"))


def _truncated(tmp, model):
    path = save_checkpoint(model, tmp / "model.safetensors")
    path.write_bytes(path.read_bytes()[:-1000])
    return path


def _metadata_only(tmp, model):
    entries = {FORMAT_KEY: "2", "config": json.dumps(model.config.to_dict())}
    return write_safetensors(tmp / "empty.safetensors", {}, entries)


def _sam_file(tmp, model):
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, tmp / "sam_vit_t.pth")
    return tmp / "sam_vit_t.pth"


def _garbage(tmp, model):
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint at all")
    return tmp / "garbage.pt"


def _code(tmp, model):
    torch.save({"state_dict": {"neck.x": _Payload()}}, tmp / "evil.pt")
    return tmp / "evil.pt"


def _one_tensor(tmp, model):
    torch.save(torch.zeros(3, 2, 8), tmp / "embeddings.pt")
    return tmp / "embeddings.pt"


def _as_model(path):
    return build_ovsam(path, device="cpu")


def _as_checkpoint(path):
    return build_ovsam("tiny", checkpoint=path, device="cpu")


BAD_INPUTS = [
    ("missing-file", _missing, _as_model, FileNotFoundError, "/path/that/does/not/exist.pt does not exist"),
    ("missing-checkpoint", _missing, _as_checkpoint, FileNotFoundError, "does not exist"),
    ("folder", _folder, _as_model, ValueError, "is a folder, not a model"),
    ("bare-state-dict", _bare_state_dict, _as_model, ValueError, "bare state dict of an OV-SAM model"),
    ("no-config", _without_config, _as_model, ValueError, "has no 'config' entry (the model config)"),
    ("no-state-dict", _without_state_dict, _as_model, ValueError, "has no 'state_dict' entry (the weights)"),
    ("no-state-dict-as-checkpoint", _without_state_dict, _as_checkpoint, ValueError, "has no 'state_dict'"),
    ("broken-config", _broken_config, _as_model, ValueError, "stored in this checkpoint is not valid"),
    ("future-version", _future_version, _as_model, ValueError, "format version 99"),
    ("flipped-byte", _flipped, _as_model, ValueError, "checksum does not match"),
    ("flipped-byte-as-checkpoint", _flipped, _as_checkpoint, ValueError, "checksum does not match"),
    ("truncated", _truncated, _as_model, ValueError, "damaged safetensors file"),
    ("metadata-only", _metadata_only, _as_model, ValueError, "has no 'state_dict' entry"),
    ("sam-file-as-model", _sam_file, _as_model, ValueError, "is a SAM checkpoint (segment-anything)"),
    ("garbage", _garbage, _as_model, ValueError, "Cannot read"),
    ("pickled-code", _code, _as_checkpoint, ValueError, "weights_only=True"),
    ("one-tensor", _one_tensor, _as_checkpoint, ValueError, "not a state dict of weights"),
]


@pytest.mark.parametrize(
    ("make", "call", "error", "expected"), [r[1:] for r in BAD_INPUTS], ids=[r[0] for r in BAD_INPUTS]
)
def test_bad_weights_input_names_the_problem(tmp_path, model, make, call, error, expected) -> None:
    with pytest.raises(error) as info:
        call(make(tmp_path, model))
    assert expected in str(info.value)
    assert not isinstance(info.value, (KeyError, TypeError, IndexError))


def _same_weights(a: OVSAM, b: OVSAM) -> None:
    expected = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_bare_state_dict_loads_when_the_config_is_known(tmp_path, model) -> None:
    path = _bare_state_dict(tmp_path, model)
    _same_weights(build_ovsam("tiny", checkpoint=path, device="cpu"), model)
    path = _without_config(tmp_path, model)  # our format without its config: the same
    _same_weights(build_ovsam("tiny", checkpoint=path, device="cpu"), model)


def test_own_checkpoints_are_checksummed_safetensors_without_pickle(tmp_path, model) -> None:
    path = save_checkpoint(
        model, tmp_path / "model.safetensors", vocabulary=["nucleus", "rod"], metadata={"k": 1}
    )
    assert is_safetensors(path) and is_own_checkpoint(path)
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    assert metadata[FORMAT_KEY] == "2" and len(metadata["sha256"]) == 64
    assert json.loads(metadata["vocabulary"])["synonyms"] == [["nucleus"], ["rod"]]
    assert json.loads(metadata["metadata"])["k"] == 1
    raw = path.read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])  # the whole header is JSON: no pickle anywhere
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert max(v["data_offsets"][1] for v in tensors.values()) == len(raw) - 8 - header_size
    assert not raw.startswith((b"PK\x03\x04", b"\x80"))  # neither torch.save's zip nor a legacy pickle
    _same_weights(build_ovsam(path, device="cpu"), model)


def test_any_flipped_data_byte_is_detected(tmp_path, model) -> None:
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    size = path.stat().st_size
    for offset in (1, 5000, size // 2, size - 40):  # data bytes, and one in the JSON header
        copy = tmp_path / f"copy{offset}.safetensors"
        copy.write_bytes(path.read_bytes())
        with pytest.raises(ValueError, match="damaged"):
            read_own_checkpoint(_flip_byte(copy, offset))


def test_the_older_torch_format_still_loads(tmp_path, model) -> None:
    torch.save(_v1(model, vocabulary={"synonyms": [["a", "b"]], "seen": [True]}), tmp_path / "old.pt")
    assert is_own_checkpoint(tmp_path / "old.pt")
    rebuilt = build_ovsam(tmp_path / "old.pt", device="cpu")
    _same_weights(rebuilt, model)
    assert rebuilt.checkpoint_extras.vocabulary.names == ["a"]
    target = assemble(load_config("tiny"))
    load_pretrained_sources(target, checkpoint=tmp_path / "old.pt")
    _same_weights(target, model)


def test_the_shipped_demo_weights_still_load_offline() -> None:
    demo = build_ovsam("demo", device="cpu")
    assert demo.checkpoint_extras.vocabulary.names == ["nucleus", "rod", "ring", "cluster"]
