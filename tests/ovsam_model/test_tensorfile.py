"""Checksummed safetensors files (``ovsam_model.tensorfile``) and atomic writes (``ovsam_model.atomic``)."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest
import torch

from ovsam_model.atomic import unique_temporary
from ovsam_model.tensorfile import (
    checksum,
    read_safetensors,
    read_state,
    verify,
    write_safetensors,
    write_state,
)


@pytest.mark.parametrize("algorithm", ["sha256", "crc32"])
def test_round_trip_and_a_flipped_byte_is_detected(tmp_path, algorithm) -> None:
    tensors = {
        "a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.tensor([1, 2], dtype=torch.int64),
    }
    path = write_safetensors(tmp_path / "x.safetensors", tensors, {"note": "hello"}, algorithm=algorithm)
    read, metadata = read_safetensors(path)
    assert metadata["note"] == "hello" and algorithm in metadata
    torch.testing.assert_close(read["a"], tensors["a"]) and torch.equal(read["b"], tensors["b"])
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum does not match"):
        read_safetensors(path)
    path.write_bytes(bytes(data[:20]))
    with pytest.raises(ValueError, match="damaged safetensors file"):
        read_safetensors(path)


def test_checksum_covers_names_dtypes_shapes_and_metadata() -> None:
    base = {"a": torch.zeros(2, 3)}
    digest = checksum(base, {"k": "v"})
    assert checksum({"b": torch.zeros(2, 3)}, {"k": "v"}) != digest
    assert checksum({"a": torch.zeros(3, 2)}, {"k": "v"}) != digest
    assert checksum({"a": torch.zeros(2, 3, dtype=torch.float64)}, {"k": "v"}) != digest
    assert checksum(base, {"k": "w"}) != digest
    assert checksum(base, {"k": "v", "sha256": "ignored"}) == digest  # the checksum entry itself is left out
    assert verify(base, {"k": "v"}) is None and verify(base, {"k": "v", "sha256": digest}) is True
    assert checksum({"a": np.zeros((2, 3), np.float32)}, {}, "crc32") == checksum(
        {"a": np.zeros((2, 3), np.float32)}, {}, "crc32"
    )


def test_nested_states_round_trip_without_pickle(tmp_path) -> None:
    shared = torch.arange(4.0)
    state = {
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": shared}},
            "param_groups": [{"betas": (0.9, 0.999), "params": [0]}],
        },
        "rng": ["MT19937", torch.arange(3), 624, 0, 0.0],
        "same": shared,  # two references to one tensor: stored twice, read back equal
        "none": None,
        "flag": True,
        "count": np.int64(7),
    }
    path = write_state(tmp_path / "s.safetensors", state, metadata={"kind": "test"})
    back, metadata = read_state(path)
    assert metadata == {"kind": "test", "sha256": metadata["sha256"]}
    assert back["optimizer"]["param_groups"] == [{"betas": (0.9, 0.999), "params": [0]}]
    assert list(back["optimizer"]["state"]) == [0]  # integer keys stay integers
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], shared) and torch.equal(back["same"], shared)
    assert back["rng"][0] == "MT19937" and torch.equal(back["rng"][1], torch.arange(3))
    assert (back["none"], back["flag"], back["count"]) == (None, True, 7)
    assert b"pickle" not in path.read_bytes() and path.read_bytes()[8:9] == b"{"


def test_objects_that_need_code_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"state\['f'\]: a function cannot be stored"):
        write_state(tmp_path / "s.safetensors", {"f": test_objects_that_need_code_are_refused})
    with pytest.raises(ValueError, match="holds no nested state"):
        read_state(write_safetensors(tmp_path / "plain.safetensors", {"a": torch.zeros(1)}, {}))


def test_written_files_follow_the_umask_not_a_private_mode(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_safetensors(tmp_path / "x.safetensors", {"a": torch.zeros(1)}, {})
        temporary = unique_temporary(tmp_path / "y.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(temporary.stat().st_mode) == 0o644 and temporary.name.startswith(".y.json.")


def test_concurrent_writers_of_one_file_never_leave_a_mixed_file(tmp_path) -> None:
    path = tmp_path / "shared.safetensors"

    def write(value: float) -> None:
        for _ in range(20):
            write_safetensors(path, {"a": torch.full((256,), value)}, {"writer": str(value)})

    threads = [threading.Thread(target=write, args=(float(v),)) for v in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tensors, metadata = read_safetensors(path)  # verifies the checksum
    assert (tensors["a"] == float(metadata["writer"])).all()
    assert not list(tmp_path.glob("*.tmp"))
