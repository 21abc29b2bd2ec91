"""``python -m ovsam_model.download``: what each model needs (``--list``), fetching it into one folder with
checks, and an offline machine loading the model from that folder. Never reaches the network: the download
functions are replaced by ones serving locally written files in the real formats (a SAM checkpoint and an
open_clip safetensors file from locally built tiny models), laid out as the real ones lay them out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import save_file

from ovsam_model import build_ovsam, download, hub
from ovsam_model.clip_configs import register_clip_configs
from ovsam_model.config import CONFIG_DIR, list_models

CLIP_REPO = "ovsam-test/tiny-clip"  # the Hugging Face repo of the fake CLIP tag
REVISION = "0123456789abcdef0123456789abcdef01234567"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeNetwork:
    """Serves local files as the SAM URL and the Hugging Face hub would, recording every request."""

    def __init__(self) -> None:
        self.urls: dict[str, Path] = {}
        self.hf: dict[tuple[str, str], Path] = {}
        self.calls: list[tuple[str, str]] = []

    def download_url_to_file(self, url, dst, hash_prefix=None, progress=True):
        self.calls.append(("url", url))
        if url not in self.urls:
            raise OSError(f"HTTP Error 404 for {url}")
        shutil.copyfile(self.urls[url], dst)

    def hf_hub_download(self, repo_id, filename, *, cache_dir=None, local_dir=None, **kwargs):
        self.calls.append(("hf", f"{repo_id}/{filename}"))
        if (repo_id, filename) not in self.hf:
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        served = self.hf[repo_id, filename]
        if local_dir is not None:
            target = Path(local_dir) / filename
            shutil.copyfile(served, target)
            return str(target)
        # The hub cache layout: blobs named by their sha256, a snapshot linking to them, refs/main.
        repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        blob = repo / "blobs" / sha256(served)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(served, blob)
        link = repo / "snapshots" / REVISION / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..", "..", "blobs", blob.name))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(REVISION)
        return str(link)

    def get_hf_file_metadata(self, url, **kwargs):
        repo_id, filename = url.removeprefix("https://huggingface.co/").split("/resolve/main/")
        if (repo_id, filename) not in self.hf:
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        served = self.hf[repo_id, filename]
        return SimpleNamespace(size=served.stat().st_size, etag=f'"{sha256(served)}"')

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("torch.hub.download_url_to_file", self.download_url_to_file)
        monkeypatch.setattr("huggingface_hub.hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", self.get_hf_file_metadata)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    fake = FakeNetwork()
    fake.install(monkeypatch)
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    return fake


@pytest.fixture
def served_model(tmp_path: Path, network: FakeNetwork, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A model config (the tiny architecture) whose CLIP comes from a hub tag and whose prompt encoder and
    decoder come from the ``sam_vit_b`` source, both served by ``network``; returns (config, served tensors)."""
    register_clip_configs()
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED,
        "ovsam-tiny-RN",
        {"fake": open_clip.pretrained._pcfg(hf_hub=f"{CLIP_REPO}/")},
    )
    torch.manual_seed(3)
    clip = open_clip.create_model("ovsam-tiny-RN", pretrained=None)
    clip_file = tmp_path / "served" / "open_clip_model.safetensors"
    clip_file.parent.mkdir()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, clip_file)
    network.hf[CLIP_REPO, "open_clip_model.safetensors"] = clip_file

    reference = build_ovsam("tiny", device="cpu")
    sam = {"image_encoder.pos_embed": torch.randn(1, 8, 8, 16)}
    for part in ("prompt_encoder", "mask_decoder"):
        sam.update(
            {f"{part}.{k}": torch.randn_like(v) for k, v in getattr(reference, part).state_dict().items()}
        )
    sam_file = tmp_path / "served" / "sam_vit_b_01ec64.pth"
    torch.save(sam, sam_file)
    source = hub.SOURCES["sam_vit_b"]
    network.urls[source.url] = sam_file
    recorded = dataclasses.replace(source, size=sam_file.stat().st_size, sha256=sha256(sam_file))
    monkeypatch.setitem(hub.SOURCES, "sam_vit_b", recorded)

    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    config["clip"]["pretrained"] = "fake"
    config["weights"] = {"sam": "sam_vit_b"}
    path = tmp_path / "served_model.json"
    path.write_text(json.dumps(config))
    return path, {"clip": clip.state_dict(), "sam": sam}


# ------------------------------------------------------------------------------------------- --list


def test_list_shows_files_sizes_licences_and_places(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "offline"
    assert download.main(["--list", "ovsam_rn50x16", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    expected = [
        ("sam_vit_h", "2.56 GB", "Apache-2.0", root / "weights" / "sam_vit_h_4b8939.pth"),
        ("sam2clip_vith_rn50x16", "536 MB", "S-Lab License 1.0, non-commercial", root / "weights"),
        ("clip2sam_coco_rn50x16", "31.5 MB", "S-Lab License 1.0, non-commercial", root / "weights"),
        ("CLIP RN50x16 (openai)", "1.16 GB", "MIT", root / "clip" / "models--timm--resnet50x16_clip.openai"),
    ]
    blocks: list[str] = []  # one per file: its "  label  [state]" line and the indented details below it
    for line in out.splitlines()[1:]:
        if line.startswith("      "):
            blocks[-1] += "\n" + line
        else:
            blocks.append(line.strip())
    assert len(blocks) == len(expected)
    for block, (label, size, licence, place) in zip(blocks, expected):
        assert block.startswith(f"{label}  [missing]"), block
        assert size in block and licence in block and str(place) in block, block


def test_list_without_models_covers_every_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "sam_vit_h_4b8939.pth").write_bytes(b"x")
    assert download.main(["--list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")] == list_models()
    assert "sam_vit_h  [present]" in out and "ovsam_demo  [shipped with the package]" in out
    assert "tiny: no files to download" in out


# ------------------------------------------------------------------------------------------ download


def test_download_puts_files_where_an_offline_machine_loads_them(
    served_model, network: FakeNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    config, served = served_model
    root = tmp_path / "offline"
    assert download.main([str(config), "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"export OVSAM_CACHE_DIR={root.resolve()}" in out
    assert "sha256 ok (recorded in ovsam_model.hub)" in out  # the SAM file
    assert "sha256 ok (the Hugging Face hub's record)" in out and out.count("loads") == 2
    assert (root / "weights" / "sam_vit_b_01ec64.pth").is_file()
    clip_dir = root / "clip" / "models--ovsam-test--tiny-clip"
    assert (clip_dir / "snapshots" / REVISION / "open_clip_model.safetensors").is_file()

    # The offline machine: only the folder and the variable, no network at all.
    def no_network(*args, **kwargs):
        raise AssertionError("the offline machine tried to reach the network")

    for name in ("torch.hub.download_url_to_file", "huggingface_hub.hf_hub_download"):
        monkeypatch.setattr(name, no_network)
    monkeypatch.setenv(hub.CACHE_ENV, str(root))
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    model = build_ovsam(str(config), device="cpu")
    for key, value in model.prompt_encoder.state_dict().items():
        assert torch.equal(value, served["sam"][f"prompt_encoder.{key}"]), key
    assert torch.equal(model.backbone.visual.conv1.weight, served["clip"]["visual.conv1.weight"])
    assert torch.equal(model.clip_text.token_embedding.weight, served["clip"]["token_embedding.weight"])


def test_files_already_there_are_checked_not_fetched_again(served_model, network, tmp_path, capsys) -> None:
    config, _ = served_model
    root = tmp_path / "offline"
    assert download.main([str(config), "--dir", str(root)]) == 0
    fetched = [call for call in network.calls if call[0] == "url" or call[1].endswith(".safetensors")]
    network.calls.clear()
    capsys.readouterr()
    assert download.main([str(config), "--dir", str(root)]) == 0
    assert len(fetched) == 2 and network.calls == []
    assert capsys.readouterr().out.count("ok: ") == 2


def test_a_corrupt_download_is_refused_and_removed(served_model, network, tmp_path, capsys) -> None:
    config, _ = served_model
    broken = tmp_path / "broken.pth"
    data = bytearray(network.urls[hub.SOURCES["sam_vit_b"].url].read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    broken.write_bytes(bytes(data))
    network.urls[hub.SOURCES["sam_vit_b"].url] = broken
    root = tmp_path / "offline"
    with pytest.raises(SystemExit) as exit_info:
        download.main([str(config), "--dir", str(root)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "sha256" in error and "the download was removed" in error
    assert not (root / "weights" / "sam_vit_b_01ec64.pth").exists()


def test_a_users_wrong_file_is_reported_and_left_alone(served_model, tmp_path, capsys) -> None:
    config, _ = served_model
    mine = tmp_path / "offline" / "weights" / "sam_vit_b_01ec64.pth"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own half-copied file")
    with pytest.raises(SystemExit) as exit_info:
        download.main([str(config), "--dir", str(tmp_path / "offline")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "incomplete download" in error and str(mine) in error
    assert mine.read_bytes() == b"my own half-copied file"


def test_a_file_that_does_not_load_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="does not load as weights"):
        download.check(junk, download.Record(None, None, ""))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_model"], "unknown model 'no_such_model'"),
        ([], "name at least one MODEL"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_command_lines_are_one_line_exit_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        download.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_offline_download_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    with pytest.raises(SystemExit):
        download.main(["sam_vit_b", "--dir", str(tmp_path)])
    assert f"{hub.OFFLINE_ENV} is set" in capsys.readouterr().err


def test_a_failed_download_is_one_line(served_model, tmp_path, monkeypatch, capsys) -> None:
    config, _ = served_model

    def unreachable(url, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", unreachable)
    with pytest.raises(SystemExit) as exit_info:
        download.main([str(config), "--dir", str(tmp_path / "offline")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "could not reach the Hugging Face hub for ovsam-test/tiny-clip" in error
