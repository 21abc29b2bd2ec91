"""Named weight sources: cache folder, local paths, downloads (never reaching the network), offline errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ovsam_model import hub


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root (``hub.cache_dir()`` is its ``weights`` folder); downloads fail loudly."""
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "root"))
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    return tmp_path / "root" / "weights"


def test_cache_dir_follows_the_environment(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.cache_dir() == cache
    monkeypatch.delenv(hub.CACHE_ENV)
    assert hub.cache_dir() == Path.home() / ".cache" / "ovsam" / "weights"


def test_registry_names_the_released_files() -> None:
    assert (
        hub.SOURCES["sam_vit_h"].url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    )
    assert hub.SOURCES["sam_vit_l"].filename == "sam_vit_l_0b3195.pth"
    assert hub.SOURCES["sam_vit_b"].filename == "sam_vit_b_01ec64.pth"
    for name in ("sam2clip_vith_rn50x16", "clip2sam_coco_rn50x16", "clip2sam_lvis_rn50x16"):
        source = hub.SOURCES[name]
        assert (source.kind, source.location, source.filename) == (
            "hf",
            "HarborYuan/ovsam_models",
            f"{name}.pth",
        )
        assert source.url == f"https://huggingface.co/HarborYuan/ovsam_models/resolve/main/{name}.pth"
    assert hub.source_path(hub.SOURCES["ovsam_demo"]) == hub.PACKAGE_WEIGHTS_DIR / "ovsam_demo.safetensors"


def test_an_existing_local_path_is_returned_as_is(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "my_weights.pth"
    path.write_bytes(b"x")
    assert hub.resolve_source(path) == path
    assert hub.resolve_source(str(path)) == path


def test_a_name_or_file_name_is_found_in_the_cache(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "clip2sam_lvis_rn50x16.pth").write_bytes(b"x")
    assert hub.resolve_source("clip2sam_lvis_rn50x16") == cache / "clip2sam_lvis_rn50x16.pth"
    assert hub.resolve_source("clip2sam_lvis_rn50x16.pth") == cache / "clip2sam_lvis_rn50x16.pth"


def test_missing_file_offline_says_what_to_put_where(cache: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        hub.resolve_source("sam2clip_vith_rn50x16")
    message = str(info.value)
    assert "sam2clip_vith_rn50x16.pth" in message
    assert "https://huggingface.co/HarborYuan/ovsam_models/resolve/main/sam2clip_vith_rn50x16.pth" in message
    assert str(cache / "sam2clip_vith_rn50x16.pth") in message
    assert hub.CACHE_ENV in message and hub.OFFLINE_ENV in message


def test_download_false_refuses_even_online(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.OFFLINE_ENV)
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth") as info:
        hub.resolve_source("sam_vit_b", download=False)
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in str(info.value)
    assert str(cache / "sam_vit_b_01ec64.pth") in str(info.value)


def test_url_download_goes_to_the_cache_with_progress(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.OFFLINE_ENV)
    monkeypatch.setitem(hub.SOURCES, "sam_vit_b", dataclasses.replace(hub.SOURCES["sam_vit_b"], size=5))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix, progress))
        Path(dst).write_bytes(b"12345")

    monkeypatch.setattr("torch.hub.download_url_to_file", fake_download)
    path = hub.resolve_source("sam_vit_b")
    assert path == cache / "sam_vit_b_01ec64.pth" and path.read_bytes() == b"12345"
    assert calls == [(hub.SOURCES["sam_vit_b"].url, hub.SOURCES["sam_vit_b"].sha256, True)]
    assert list(cache.iterdir()) == [path]  # no temporary file left behind


def test_hugging_face_download(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.OFFLINE_ENV)
    calls = []

    def fake_hf(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.write_bytes(b"x")
        return str(target)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf)
    assert hub.resolve_source("clip2sam_coco_rn50x16") == cache / "clip2sam_coco_rn50x16.pth"
    assert calls == [("HarborYuan/ovsam_models", "clip2sam_coco_rn50x16.pth")]


def test_failed_download_names_the_url_and_target(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hub.OFFLINE_ENV)

    def broken(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr("torch.hub.download_url_to_file", broken)
    with pytest.raises(FileNotFoundError, match="connection refused") as info:
        hub.resolve_source("sam_vit_h")
    assert hub.SOURCES["sam_vit_h"].url in str(info.value)
    assert str(cache / "sam_vit_h_4b8939.pth") in str(info.value)
    assert not (cache / "sam_vit_h_4b8939.pth").exists()


def test_truncated_cached_file_is_reported(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "sam_vit_h_4b8939.pth").write_bytes(b"only a few bytes")
    with pytest.raises(ValueError, match="incomplete download"):
        hub.resolve_source("sam_vit_h")


def test_unknown_name_and_missing_path(cache: Path) -> None:
    with pytest.raises(ValueError, match="sam_vit_h"):
        hub.resolve_source("no_such_weights")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.resolve_source("/no/such/file.pth")


def test_missing_demo_weights_say_so(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    demo = dataclasses.replace(hub.SOURCES["ovsam_demo"], location=str(tmp_path / "pkg"))
    monkeypatch.setitem(hub.SOURCES, "ovsam_demo", demo)
    with pytest.raises(FileNotFoundError, match="not in this installation") as info:
        hub.resolve_source("ovsam_demo")
    assert str(tmp_path / "pkg" / "ovsam_demo.safetensors") in str(info.value)


def test_clip_weights_error_names_the_hub_repo() -> None:
    error = hub.clip_weights_error("RN50x16", "openai", RuntimeError("offline."))
    assert isinstance(error, FileNotFoundError)
    assert "timm/resnet50x16_clip.openai" in str(error) and "clip_pretrained=PATH" in str(error)


def test_one_cache_root_for_every_cache(cache: Path, tmp_path: Path) -> None:
    assert hub.cache_root() == tmp_path / "root"
    assert (hub.cache_dir(), hub.clip_cache_dir()) == (
        tmp_path / "root" / "weights",
        tmp_path / "root" / "clip",
    )


def test_every_source_names_its_licence_and_size() -> None:
    for source in hub.SOURCES.values():
        assert source.licence and source.size_hint, source.name
    released = {name for name, s in hub.SOURCES.items() if s.non_commercial}
    assert released == {"sam2clip_vith_rn50x16", "clip2sam_coco_rn50x16", "clip2sam_lvis_rn50x16"}


def test_missing_released_weights_say_their_licence(cache: Path) -> None:
    with pytest.raises(FileNotFoundError, match="S-Lab License 1.0, non-commercial use only"):
        hub.resolve_source("clip2sam_coco_rn50x16")
    with pytest.raises(FileNotFoundError) as info:
        hub.resolve_source("sam_vit_h")
    assert "non-commercial" not in str(info.value) and "ovsam_model.download" in str(info.value)


def test_clip_weights_follow_open_clip_registry() -> None:
    weights = hub.clip_weights("RN50x16", "openai")
    assert weights is not None
    assert (weights.repo, weights.filenames) == (
        "timm/resnet50x16_clip.openai",
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    )
    assert (
        weights.licence.startswith("MIT")
        and weights.page == "https://huggingface.co/timm/resnet50x16_clip.openai"
    )
    assert hub.clip_weights("RN50x16", None) is None and hub.clip_weights("RN50x16", "none") is None
    assert hub.clip_weights("RN50x16", "no-such-tag") is None


def test_open_clip_looks_in_its_default_cache_unless_ours_has_the_weights(cache: Path) -> None:
    assert hub.open_clip_cache_dir("RN50x16", "openai") is None  # nothing fetched ahead of time
    snapshot = hub.clip_cache_dir() / "models--timm--resnet50x16_clip.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    assert hub.open_clip_cache_dir("RN50x16", "openai") == str(hub.clip_cache_dir())
    assert hub.open_clip_cache_dir("RN50x16", None) is None
