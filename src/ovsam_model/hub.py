"""Named pretrained-weight sources, where their files come from, and the cache folder they go to.

A *source* is a file of weights with a name (``sam_vit_h``, ``sam2clip_vith_rn50x16``, ...). The registry says
where to download it (a public URL, or a file of a Hugging Face repository), what it is and under which licence
it is distributed. Files are kept in one cache folder, ``cache_dir()`` (``$OVSAM_CACHE_DIR/weights``, default
``~/.cache/ovsam/weights``), under their own file names, so copying a file there by hand is all a machine
without network needs. Every place that takes a source name also takes a local path.

``OVSAM_CACHE_DIR`` (``CACHE_ENV``) is defined here and only here: ``cache_root()`` is the one root of every
cache of this package (``weights/``, ``clip/``, the text embeddings' ``text/``).

Offline: with ``HF_HUB_OFFLINE=1`` nothing is downloaded (neither from Hugging Face nor from the SAM URL); a
missing file raises ``FileNotFoundError`` naming the file, the URL to fetch it from and the path to put it at.

CLIP weights are fetched by open_clip itself (from the Hugging Face hub, into its cache). ``python -m
ovsam_model.download`` puts them under ``cache_root() / "clip"`` in the hub's cache layout;
``open_clip_cache_dir()`` tells the model builder to look there when they are there (``clip_weights()`` says
which file a CLIP needs, ``clip_weights_error`` what to do when it is missing).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "OVSAM_CACHE_DIR"
OFFLINE_ENV = "HF_HUB_OFFLINE"
PACKAGE_WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_DIRNAME, CLIP_DIRNAME = "weights", "clip"  # the folders under cache_root()
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OVSAM_HF_REPO = "HarborYuan/ovsam_models"

SAM_LICENCE = "Apache-2.0 (Meta AI, segment-anything)"
OVSAM_LICENCE = (
    "S-Lab License 1.0, non-commercial use only (the OV-SAM authors: "
    "https://github.com/HarborYuan/ovsam/blob/main/LICENSE)"
)
OWN_LICENCE = "BSD-3-Clause (this package)"
# Licences of the CLIP weights of the configs, by open_clip tag (the model cards of their Hugging Face repos).
CLIP_LICENCES = {"openai": "MIT (OpenAI CLIP)", "laion2b_s26b_b102k_augreg": "MIT (LAION, open_clip)"}
# Sizes of CLIP weight files as shown on their Hugging Face pages (not exact: checked against the hub's own
# record of the file at download time).
CLIP_SIZE_HINTS = {("RN50x16", "openai"): "1.16 GB", ("RN50", "openai"): "about 400 MB"}


@dataclass(frozen=True)
class WeightSource:
    """One named file of weights.

    kind: "url" (``location`` is the download URL), "hf" (``location`` is the Hugging Face repo id, the file
    is ``filename`` in it) or "package" (a file shipped inside this package, in ``weights/``).
    size / sha256: of the file, where known (checked after a download; the size also on cached files).
    licence: the terms the file is distributed under. size_hint: its size as its host shows it, for people.
    """

    name: str
    kind: str
    location: str
    filename: str
    description: str
    size: int | None = None
    sha256: str | None = None
    licence: str = ""
    size_hint: str = ""

    @property
    def non_commercial(self) -> bool:
        """Whether the licence forbids commercial use (said with every download and missing-file message)."""
        return "non-commercial" in self.licence

    @property
    def url(self) -> str:
        """Where a person can download the file by hand."""
        if self.kind == "hf":
            return f"https://huggingface.co/{self.location}/resolve/main/{self.filename}"
        if self.kind == "package":
            return "(not downloadable: shipped with the package)"
        return self.location


SOURCES: dict[str, WeightSource] = {
    s.name: s
    for s in (
        WeightSource(
            "sam_vit_h",
            "url",
            SAM_URL + "sam_vit_h_4b8939.pth",
            "sam_vit_h_4b8939.pth",
            "SAM ViT-H (prompt encoder, multimask decoder + IoU head; stage-1 teacher)",
            size=2564550879,
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            licence=SAM_LICENCE,
            size_hint="2.56 GB",
        ),
        WeightSource(
            "sam_vit_l",
            "url",
            SAM_URL + "sam_vit_l_0b3195.pth",
            "sam_vit_l_0b3195.pth",
            "SAM ViT-L",
            size=1249524607,
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            licence=SAM_LICENCE,
            size_hint="1.25 GB",
        ),
        WeightSource(
            "sam_vit_b",
            "url",
            SAM_URL + "sam_vit_b_01ec64.pth",
            "sam_vit_b_01ec64.pth",
            "SAM ViT-B",
            size=375042383,
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            licence=SAM_LICENCE,
            size_hint="375 MB",
        ),
        WeightSource(
            "sam2clip_vith_rn50x16",
            "hf",
            OVSAM_HF_REPO,
            "sam2clip_vith_rn50x16.pth",
            "released OV-SAM SAM2CLIP adapter for CLIP RN50x16 (neck_student.*)",
            licence=OVSAM_LICENCE,
            size_hint="536 MB",
        ),
        WeightSource(
            "clip2sam_coco_rn50x16",
            "hf",
            OVSAM_HF_REPO,
            "clip2sam_coco_rn50x16.pth",
            "released OV-SAM CLIP2SAM head trained on COCO (mask_decoder.* + fpn_neck.*)",
            licence=OVSAM_LICENCE,
            size_hint="31.5 MB",
        ),
        WeightSource(
            "clip2sam_lvis_rn50x16",
            "hf",
            OVSAM_HF_REPO,
            "clip2sam_lvis_rn50x16.pth",
            "released OV-SAM CLIP2SAM head trained on LVIS base classes",
            licence=OVSAM_LICENCE,
            size_hint="31.5 MB",
        ),
        WeightSource(
            "ovsam_demo",
            "package",
            str(PACKAGE_WEIGHTS_DIR),
            "ovsam_demo.safetensors",
            "the small demo model trained from scratch on the synthetic dataset (our checkpoint format)",
            licence=OWN_LICENCE,
            size_hint="8 MB, shipped",
        ),
    )
}


def list_sources() -> list[str]:
    """Names of the registered weight sources."""
    return sorted(SOURCES)


def cache_root() -> Path:
    """The root of every cache of this package: ``$OVSAM_CACHE_DIR``, else ``~/.cache/ovsam`` (not created).

    Below it: ``weights/`` (``cache_dir()``), ``clip/`` (``clip_cache_dir()``) and the text embeddings'
    ``text/``. One variable moves them all, which is what an offline machine needs."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ovsam"


def cache_dir() -> Path:
    """The folder downloaded weights go to: ``cache_root() / "weights"``. Not created here."""
    return cache_root() / WEIGHTS_DIRNAME


def clip_cache_dir() -> Path:
    """The folder of CLIP weights fetched ahead of time (Hugging Face hub cache layout, as open_clip reads
    it with ``cache_dir=``): ``cache_root() / "clip"``. Not created here."""
    return cache_root() / CLIP_DIRNAME


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value: then no source is downloaded."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def source_path(source: WeightSource) -> Path:
    """Where the file of ``source`` is expected: in the package for shipped files, else in ``cache_dir()``."""
    if source.kind == "package":
        return Path(source.location) / source.filename
    return cache_dir() / source.filename


def find_source(name: str) -> WeightSource | None:
    """The registered source called ``name``, or whose file name is ``name`` (``sam_vit_h_4b8939.pth``)."""
    if name in SOURCES:
        return SOURCES[name]
    for source in SOURCES.values():
        if source.filename == name:
            return source
    return None


def resolve_source(name_or_path: str | Path, download: bool = True) -> Path:
    """The local file of a weight source.

    Args:
        name_or_path: an existing file (returned as is), a source name (see ``list_sources()``) or a source's
            file name; a name is looked up in ``cache_dir()`` and downloaded there when missing.
        download: allow downloading (also needs ``HF_HUB_OFFLINE`` unset).

    Raises:
        FileNotFoundError: the file is missing and cannot be downloaded; the message says which file, where to
            get it and the exact path to put it at.
        ValueError: neither a file nor a known name; or a cached file with the wrong size.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    source = find_source(str(name_or_path))
    if source is None:
        if path.suffix or len(path.parts) > 1:
            raise FileNotFoundError(f"Weights file '{name_or_path}' does not exist.")
        raise ValueError(
            f"Unknown weights source '{name_or_path}': give a path to a file or one of "
            f"{', '.join(list_sources())}."
        )
    target = source_path(source)
    if target.is_file():
        _check_size(source, target)
        return target
    if source.kind == "package":
        raise FileNotFoundError(
            f"The weights '{source.name}' ({source.description}) are not in this installation: expected the "
            f"file {target}. Train the model (python -m ovsam_model.train) and put its checkpoint there, or "
            "pass the path of a checkpoint instead."
        )
    if not download or is_offline():
        reason = "downloads are disabled" if not download else f"{OFFLINE_ENV} is set"
        raise FileNotFoundError(_missing_message(source, target, reason))
    return download_source(source, target)


def licence_notice(source: WeightSource) -> str:
    """The sentence every download and missing-file message carries for weights under restrictive terms."""
    if not source.non_commercial:
        return ""
    return f" Note: '{source.filename}' is under the {source.licence}; this package's BSD licence does not cover it."


def _missing_message(source: WeightSource, target: Path, reason: str) -> str:
    return (
        f"Weights file '{source.filename}' ({source.description}) is not available ({reason}). Download it "
        f"from {source.url} and put it at {target} (set {CACHE_ENV} to move the cache; python -m "
        "ovsam_model.download fetches every file of a model ahead of time), or pass the file's local path "
        f"instead.{licence_notice(source)}"
    )


def _check_size(source: WeightSource, path: Path) -> None:
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        raise ValueError(
            f"{path} has {size} bytes, but '{source.filename}' has {source.size}: an incomplete download? "
            f"Delete it and try again, or fetch it again from {source.url}."
        )


def download_source(source: WeightSource, target: Path) -> Path:
    """Fetch ``source`` to ``target`` (with a progress bar), then check its size (and, for URL sources with a
    recorded sha256, its checksum). Raises ``FileNotFoundError`` saying what to download where."""
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info(
        "Downloading %s from %s to %s.%s", source.filename, source.url, target, licence_notice(source)
    )
    try:
        if source.kind == "hf":
            _download_hf(source, target)
        else:
            _download_url(source, target)
    except Exception as error:  # network, HTTP, hash or disk errors all mean "the file is not there"
        raise FileNotFoundError(_missing_message(source, target, f"download failed: {error}")) from error
    if not target.is_file():
        raise FileNotFoundError(_missing_message(source, target, "the download left no file"))
    _check_size(source, target)
    return target


def _download_url(source: WeightSource, target: Path) -> None:
    """URL download to a temporary name next to ``target``, hash-checked, renamed once complete."""
    import torch.hub

    partial = target.with_name(target.name + ".part")
    try:
        torch.hub.download_url_to_file(source.url, str(partial), hash_prefix=source.sha256, progress=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _download_hf(source: WeightSource, target: Path) -> None:
    """Hugging Face download into the cache folder (huggingface_hub writes to a temporary file and shows
    progress itself)."""
    from huggingface_hub import hf_hub_download

    downloaded = Path(hf_hub_download(source.location, source.filename, local_dir=target.parent))
    if downloaded.resolve() != target.resolve():
        os.replace(downloaded, target)


@dataclass(frozen=True)
class ClipWeights:
    """The pretrained weights of one open_clip architecture and tag, where open_clip fetches them from.

    repo: the Hugging Face repo open_clip downloads from (it prefers the hub), "" for tags with a URL only.
    filenames: the files open_clip asks that repo for, in its order (safetensors first, then the pickle; the
        first that exists is used); for URL tags, the URL's file name.
    url: the direct download URL of URL-only tags ("" otherwise).
    """

    model_name: str
    tag: str
    repo: str
    filenames: tuple[str, ...]
    url: str
    licence: str
    size_hint: str = ""

    @property
    def label(self) -> str:
        return f"CLIP {self.model_name} ({self.tag})"

    @property
    def page(self) -> str:
        """Where a person can see (and fetch) the files."""
        return f"https://huggingface.co/{self.repo}" if self.repo else self.url


def clip_weights(model_name: str, pretrained: str | None) -> ClipWeights | None:
    """What open_clip fetches for the tag ``pretrained`` of ``model_name``; None for random weights (None,
    "", "none"), a local file, or a tag open_clip does not know."""
    import open_clip  # heavy (torch); only needed when CLIP weights are asked about

    if not pretrained or pretrained == "none" or Path(pretrained).expanduser().is_file():
        return None
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        return None
    licence = CLIP_LICENCES.get(pretrained, "see the weights' model card")
    hint = CLIP_SIZE_HINTS.get((model_name, pretrained), "")
    if cfg.get("hf_hub"):
        # open_clip's convention: "org/name/" (its default file name) or "org/name/file".
        repo, filename = os.path.split(str(cfg["hf_hub"]))
        filename = filename or open_clip.constants.HF_WEIGHTS_NAME
        return ClipWeights(
            model_name, pretrained, repo, (*_safetensors_names(filename), filename), "", licence, hint
        )
    if cfg.get("url"):
        url = str(cfg["url"])
        return ClipWeights(model_name, pretrained, "", (os.path.basename(url),), url, licence, hint)
    return None


def _safetensors_names(filename: str) -> tuple[str, ...]:
    """The safetensors files open_clip tries before ``filename`` (as its ``_get_safe_alternatives``)."""
    import open_clip  # heavy (torch), as above

    if filename == open_clip.constants.HF_WEIGHTS_NAME:
        return (open_clip.constants.HF_SAFE_WEIGHTS_NAME,)
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors",)
    return ()


def find_clip_file(weights: ClipWeights, folder: Path) -> Path | None:
    """The file of ``weights`` in ``folder`` (laid out as open_clip's ``cache_dir``), if it is there."""
    if weights.repo:
        from huggingface_hub import try_to_load_from_cache  # open_clip's own dependency

        for name in weights.filenames:
            found = try_to_load_from_cache(weights.repo, name, cache_dir=folder)
            if isinstance(found, str):
                return Path(found)
        return None
    path = folder / weights.filenames[0]
    return path if path.is_file() else None


def open_clip_cache_dir(model_name: str, pretrained: str | None) -> str | None:
    """The ``cache_dir`` to give ``open_clip.create_model``: ``clip_cache_dir()`` when the weights are there
    (put there by ``python -m ovsam_model.download``), else None (open_clip's default, the Hugging Face
    cache, so weights open_clip downloaded before keep working)."""
    weights = clip_weights(model_name, pretrained)
    if weights is None or find_clip_file(weights, clip_cache_dir()) is None:
        return None
    return str(clip_cache_dir())


def clip_weights_error(model_name: str, pretrained: str, error: Exception) -> FileNotFoundError:
    """A ``FileNotFoundError`` saying how to provide CLIP weights that open_clip could not find or download.

    open_clip downloads its pretrained tags itself (mostly from the Hugging Face hub, into the hub cache);
    offline, the file must already be in that cache, or be passed as a local file (``clip_pretrained=path``).
    """
    where = ""
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
        hub_id = str(cfg.get("hf_hub", "")).rstrip("/")
        if hub_id:
            where = f" (Hugging Face repo {hub_id})"
        elif cfg.get("url"):
            where = f" ({cfg['url']})"
    except Exception:  # the hint is best-effort; the original error is chained by the caller
        pass
    return FileNotFoundError(
        f"open_clip could not load the '{pretrained}' weights of CLIP {model_name}{where}: "
        f"{str(error).rstrip('.')}. "
        "Download them while online (python -m ovsam_model.download MODEL puts them under "
        f"${CACHE_ENV}/clip; open_clip's own downloads go to the Hugging Face cache, $HF_HOME), or pass a "
        "local weights file with clip_pretrained=PATH; clip_pretrained='none' builds a randomly initialised CLIP."
    )
