"""``python -m ovsam_model.download MODEL... [--dir DIR]``: fetch every file a model needs, ahead of time.

For machines without network while annotating (HPC compute nodes, lab machines behind a firewall): run this
where there is network, copy DIR to the offline machine and set ``OVSAM_CACHE_DIR=DIR`` there (the command
prints the line). MODEL is a model name (``--list`` shows them), a model config JSON, or a weight source name
(``clip2sam_lvis_rn50x16``). Under DIR, ``weights/`` holds SAM and the released OV-SAM files under their own
names and ``clip/`` the CLIP weights in the Hugging Face hub's cache layout, which is how open_clip reads them.

Every file is checked after its download and when it is there already: its size and sha256 against the values
recorded in ``ovsam_model.hub`` (the SAM files), or else against the Hugging Face hub's own record of the file
(size and LFS sha256: the OV-SAM and CLIP files, whose checksums are not recorded in this package); and it must
load as weights (``torch.load(weights_only=True)`` or safetensors). A file that fails is reported, never
deleted or overwritten. The released OV-SAM weights are under the S-Lab License 1.0 (non-commercial use only).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import huggingface_hub
import torch
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open

from . import hub
from .cli_parser import OneLineErrorParser
from .cli_parser import fail as cli_fail
from .config import list_models, load_config

PROG = "python -m ovsam_model.download"
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class NeededFile:
    """One file a model needs, where it comes from and where the loader looks for it.

    kind: "url" or "hf" (a registry source, into ``DIR/weights``), "clip" (CLIP weights, into ``DIR/clip`` as
    open_clip's cache; ``target`` is then the repo's folder there) or "package" (shipped; nothing to fetch).
    """

    label: str
    kind: str
    origin: str
    target: Path
    licence: str
    size_hint: str
    source: hub.WeightSource | None = None
    clip: hub.ClipWeights | None = None


@dataclass(frozen=True)
class Record:
    """What a file must be: size in bytes and sha256, each None where nobody recorded it; ``by`` says who did."""

    size: int | None
    sha256: str | None
    by: str


# -------------------------------------------------------------------------------------- what is needed


def needed_files(name: str, root: Path) -> list[NeededFile]:
    """The files of model (or weight source) ``name`` and where they go under ``root``.

    Raises:
        ValueError: ``name`` is neither a model, a model config JSON, nor a weight source.
    """
    source = hub.find_source(name)
    if source is not None:
        return [_source_file(source, root)]
    try:
        config = load_config(name)
    except ValueError:
        raise ValueError(
            f"unknown model '{name}': give one of {', '.join(list_models())}, a model config JSON, or a weight "
            f"source ({', '.join(hub.list_sources())})"
        ) from None
    files = [_source_file(hub.SOURCES[s], root) for s in config.weights.values()]
    clip = hub.clip_weights(config.clip.model_name, config.clip.pretrained)
    if clip is not None:
        folder = root / hub.CLIP_DIRNAME / ("models--" + clip.repo.replace("/", "--") if clip.repo else "")
        files.append(
            NeededFile(clip.label, "clip", clip.page, folder, clip.licence, clip.size_hint, clip=clip)
        )
    return files


def _source_file(source: hub.WeightSource, root: Path) -> NeededFile:
    if source.kind == "package":
        target = hub.source_path(source)
    else:
        target = root / hub.WEIGHTS_DIRNAME / source.filename
    return NeededFile(source.name, source.kind, source.url, target, source.licence, source.size_hint, source)


def present(item: NeededFile) -> Path | None:
    """The file of ``item`` if it is where the loader looks for it."""
    if item.clip is not None:
        return hub.find_clip_file(item.clip, item.target.parent if item.clip.repo else item.target)
    return item.target if item.target.is_file() else None


# ------------------------------------------------------------------------------------ fetch and check


def fetch(item: NeededFile) -> tuple[Path, list[str]]:
    """Download ``item`` unless it is there, then check it; returns (its path, what was checked).

    Raises:
        FileNotFoundError: a download failed or a shipped file is missing.
        ValueError: the file fails a check: a file that was there is left as it is (the message says what to
            do), a fresh download is removed.
    """
    path = present(item)
    fetched = path is None
    if item.kind == "package" and path is None:
        raise FileNotFoundError(f"{item.target} is missing from this installation: reinstall napari-ovsam")
    record = _record(item)
    if path is None:
        if hub.is_offline():
            raise FileNotFoundError(
                f"{item.label} is not in {item.target.parent} and {hub.OFFLINE_ENV} is set"
            )
        path = _download(item)
    try:
        checks = check(path, record)
    except ValueError as error:
        if not fetched:
            raise  # the user's file: left as it is, the message says what to do
        _remove_download(path)
        raise ValueError(f"{error} (the download was removed)") from None
    if fetched and item.kind != "package" and item.licence:
        print(f"  {item.label} is under the {item.licence}.", flush=True)
    return path, checks


def _remove_download(path: Path) -> None:
    """Remove a file this command just downloaded (in the hub's cache layout: the link and its blob)."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _record(item: NeededFile) -> Record:
    source = item.source
    if source is not None and (source.size is not None or source.sha256 is not None):
        return Record(source.size, source.sha256, "recorded in ovsam_model.hub")
    repo = source.location if source is not None and source.kind == "hf" else ""
    names: tuple[str, ...] = (source.filename,) if repo and source is not None else ()
    if item.clip is not None and item.clip.repo:
        repo, names = item.clip.repo, item.clip.filenames
    if not repo or hub.is_offline():
        return Record(None, None, "")
    for name in names:  # the hub's record of the first file that exists (as open_clip picks it)
        try:
            meta = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, name))
        except EntryNotFoundError:
            continue
        except Exception as error:  # network and HTTP errors of any client library mean the same here
            raise FileNotFoundError(
                f"could not reach the Hugging Face hub for {repo}/{name}: {error}"
            ) from error
        etag = (meta.etag or "").strip('"')
        return Record(meta.size, etag if SHA256.fullmatch(etag) else None, "the Hugging Face hub's record")
    return Record(None, None, "")


def _download(item: NeededFile) -> Path:
    if item.source is not None:
        return hub.download_source(item.source, item.target)
    assert item.clip is not None
    clip, cache = item.clip, item.target.parent if item.clip.repo else item.target
    if not clip.repo:
        from open_clip.pretrained import download_pretrained_from_url  # checks OpenAI's sha256 itself

        return Path(download_pretrained_from_url(clip.url, cache_dir=str(cache)))
    for name in clip.filenames:  # progress bars come from huggingface_hub
        try:
            return Path(huggingface_hub.hf_hub_download(clip.repo, name, cache_dir=cache))
        except EntryNotFoundError:
            continue
        except Exception as error:  # network, HTTP and disk errors: the file is not there
            raise FileNotFoundError(f"downloading {name} from {clip.page} failed: {error}") from error
    raise FileNotFoundError(f"none of {', '.join(clip.filenames)} is in the Hugging Face repo {clip.repo}")


def check(path: Path, record: Record) -> list[str]:
    """Check ``path`` against ``record`` and that it loads as weights; returns what was checked.

    In the hub's cache layout the blob's file name is the hub's sha256 of it, which is checked as well."""
    done = []
    size = path.stat().st_size
    if record.size is not None:
        if size != record.size:
            raise ValueError(
                f"{path} has {size} bytes, but {record.by} says {record.size}: an incomplete download? Delete it "
                "and run the download again"
            )
        done.append(f"size {size:,} bytes ({record.by})")
    else:
        done.append(f"size {size:,} bytes (no size recorded here)")
    blob = path.resolve().name
    expected = record.sha256 or (
        blob if path.resolve().parent.name == "blobs" and SHA256.fullmatch(blob) else None
    )
    if expected is not None:
        actual = _sha256(path)
        if actual != expected:
            raise ValueError(
                f"{path} has sha256 {actual}, expected {expected}: delete it and download it again"
            )
        done.append(f"sha256 ok ({record.by or 'the Hugging Face hub cache'})")
    else:
        done.append("sha256 not recorded here, not checked")
    _check_loads(path)
    done.append("loads")
    return done


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_loads(path: Path) -> None:
    """The file holds tensors: a safetensors file, or a torch file that loads with ``weights_only``."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as file:
                count = len(list(file.keys()))
        else:
            try:  # memory-mapped: a 2.5 GB file is checked without reading it all
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
            count = len(state) if isinstance(state, dict) else 0
    except Exception as error:  # any reader error means the same to the user: not a usable weights file
        raise ValueError(
            f"{path} does not load as weights ({error}): delete it and download it again"
        ) from error
    if count == 0:
        raise ValueError(f"{path} holds no tensors: delete it and download it again")


# ---------------------------------------------------------------------------------------------- CLI


def fail(message: str) -> NoReturn:
    cli_fail(PROG, message)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[1])
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help="model names, model config JSONs or weight sources"
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"folder to put the files in (default: ${hub.CACHE_ENV}, else ~/.cache/ovsam); on the machine "
        f"without network, set {hub.CACHE_ENV} to it",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="show what each MODEL (default: every model) needs, its size, licence and where it would be put; "
        "downloads nothing",
    )
    return p


def list_needs(models: list[str], root: Path) -> None:
    for model in models:
        files = needed_files(model, root)
        print(f"{model}: {'no files to download' if not files else f'{len(files)} file(s)'}")
        for item in files:
            state = "shipped with the package" if item.kind == "package" else (
                "present" if present(item) else "missing"
            )  # fmt: skip
            print(f"  {item.label}  [{state}]")
            print(f"      size     {item.size_hint or 'not recorded here'}")
            print(f"      licence  {item.licence}")
            print(f"      from     {item.origin}")
            print(f"      to       {item.target}")


def download(models: list[str], root: Path) -> None:
    items = {item.target: item for model in models for item in needed_files(model, root)}
    for item in items.values():
        print(f"{item.label} -> {item.target}", flush=True)
        path, checks = fetch(item)
        print(f"  ok: {path} ({'; '.join(checks)})", flush=True)
    restricted = sorted({i.label for i in items.values() if i.source is not None and i.source.non_commercial})
    if restricted:
        print(f"Note: {', '.join(restricted)} are under the {hub.OVSAM_LICENCE}.")
    print(f"\nAll files of {', '.join(models)} are in {root}. On the machine without network, set:")
    print(f"    export {hub.CACHE_ENV}={root.resolve()}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.dir.expanduser() if args.dir is not None else hub.cache_root()
    models = args.models or (list_models() if args.list else [])
    if not models:
        fail("name at least one MODEL (see --list)")
    try:
        if args.list:
            list_needs(models, root)
        else:
            download(models, root)
    except (ValueError, OSError, RuntimeError) as error:  # bad names, failed downloads, failed checks
        fail(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
