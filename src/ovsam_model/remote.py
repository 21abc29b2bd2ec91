"""``RemotePredictor``: the ``OVSAMPredictor`` interface, computed by an OV-SAM server (``ovsam_model.serve``).

::

    predictor = RemotePredictor("http://gpu-box:8765", token=open("token").read().strip())
    predictor.set_image(image)                 # sent once: the server knows images by their content
    predictor.set_vocabulary(["nucleus", "rod", "ring", "cluster"])
    result = predictor.predict(boxes=[x0, y0, x1, y1])   # a Prediction, as from the local predictor

Images are known by content (the id is the plugin's cache hash of the pixels and contrast limits): an image
the server holds is not sent or encoded again, whichever client sent it. ``get_image_embedding`` returns a
reference to the server's embedding (a few bytes), which the plugin's embedding cache keeps like a local state.
The pixels of the images set recently are kept here (``pixel_memory_bytes``) so that, when a restarted server
has forgotten an image or a vocabulary, the client sends it again and the request goes through.

Connection failures and "busy" answers are retried with backoff (``serve.client``); what cannot be retried
raises a ``RemoteError`` (unreachable, token refused, another model than the one asked for) or, for input the
model refuses, the ``ValueError`` the local predictor raises, with the same message.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prediction import NO_IMAGE, NO_VOCABULARY, Prediction, check_top_k
from .remote_examples import RemoteExamples
from .serve.client import RemoteError, ServerConnection, Timing, error_of
from .serve.wire import DEFLATE, NPY, encode_array, instances_from_wire, prediction_from_wire
from .vocabulary import Vocabulary, as_vocabulary

REFERENCE = "remote_image"  # the key of an embedding reference in a state dict
DEFAULT_PIXEL_MEMORY = 1024**3


@dataclass(frozen=True)
class RemoteConfig:
    """What the client knows of the served model's configuration."""

    name: str
    image_size: int
    embed_dim: int


class RemoteModel:
    """The served model as seen from the client: its configuration, fingerprint and device (no weights)."""

    text_encoder = None

    def __init__(self, info: dict[str, Any], url: str) -> None:
        self.config = RemoteConfig(str(info["name"]), int(info["image_size"]), int(info["embed_dim"]))
        self.fingerprint = f"remote-{info['fingerprint']}"
        self.device = RemoteDevice(str(info["device"]), url)


@dataclass(frozen=True)
class RemoteDevice:
    """Where a remote model runs: ``type`` is "remote"; printed as e.g. "cuda:0 at http://gpu-box:8765"."""

    server_device: str
    url: str
    type: str = "remote"

    def __str__(self) -> str:
        return f"{self.server_device} at {self.url}"


class RemotePredictor(RemoteExamples):
    """Segment and name objects with a model served by ``python -m ovsam_model.serve`` (module docstring).

    url: the server's address ("http://host:8765"). token: its bearer token, if it needs one. model: the name
    or fingerprint of the model expected (a ``RemoteError`` if the server runs another); None takes any.
    timeout: seconds per request; prompt_timeout: for prompts on an image the server holds whole (``predict``,
    ``example_features``), which it answers in milliseconds and napari waits for on its GUI thread, so that a
    hung server shows as an error rather than a frozen window. retries: attempts after a connection failure or
    a busy answer. compress: send images zlib-compressed (default: unless the server is on this machine).
    transport: an ``httpx`` transport (tests). Connects (and checks the token) when created.
    """

    remote = True
    tiling = None  # the server tiles large images itself; the client sends whole slices
    tiles = None

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        model: str | None = None,
        timeout: float = 120.0,
        prompt_timeout: float = 15.0,
        retries: int = 3,
        backoff: float = 0.2,
        compress: bool | None = None,
        pixel_memory_bytes: int = DEFAULT_PIXEL_MEMORY,
        transport: Any = None,
    ) -> None:
        self._server = ServerConnection(
            url, token, timeout=timeout, retries=retries, backoff=backoff, transport=transport
        )
        self.url, self.token = self._server.url, self._server.token
        # zlib costs more than it saves on loopback (measured: 87 vs 5-8 ms for a 1024x1024 uint16 slice)
        self.compress = not _is_loopback(self.url) if compress is None else bool(compress)
        self.prompt_timeout = float(prompt_timeout)
        self._pixels: OrderedDict[str, tuple[np.ndarray, tuple[float, float] | None]] = OrderedDict()
        self._pixel_budget = int(pixel_memory_bytes)
        self._lock = threading.Lock()
        self.server_info = self.connect(model)
        self.model = RemoteModel(self.server_info, self.url)
        self.fingerprint = self.model.fingerprint
        self.vocabulary: Vocabulary | None = None
        self._vocabulary_id: str | None = None
        self.image_id: str | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.image_tiled = False
        self._examples = self._examples_id = None  # see RemoteExamples
        defaults = self.server_info.get("classes")
        if defaults:  # the served checkpoint's own vocabulary, as the local predictor starts with it
            self.set_vocabulary(Vocabulary.from_dict(defaults))

    # ------------------------------------------------------------------------------------------ server

    def connect(self, model: str | None = None) -> dict[str, Any]:
        """Ask the server what it serves (checks the address and the token); returns the model's info."""
        answer = self._call("GET", "/v1/models").json()
        info = dict(answer["models"][0])
        info["limits"], info["version"] = answer.get("limits", {}), answer.get("version")
        info["stats"] = answer.get(
            "stats", {}
        )  # the server's counters: requests, model calls, merged prompts
        if model is not None and model not in (info["name"], info["fingerprint"]):
            raise RemoteError(
                f"The server at {self.url} runs the model '{info['name']}', not '{model}': start it with "
                f"--model {model}, or connect without asking for a model."
            )
        return info

    @property
    def last_timing(self) -> Timing | None:
        """The round trip and server times of the last call to the server (None before the first)."""
        return self._server.last_timing

    def ping(self) -> Timing:
        """One round trip to the server (``GET /v1/health``)."""
        self._call("GET", "/v1/health")
        assert self.last_timing is not None
        return self.last_timing

    @property
    def device(self) -> RemoteDevice:
        return self.model.device

    @property
    def class_names(self) -> list[str]:
        """The names objects are named from: the vocabulary's, then classes that have examples only."""
        from .exemplars.fusion import class_union

        vocabulary = [] if self.vocabulary is None else list(self.vocabulary.names)
        return class_union(vocabulary, self.examples.classes)

    def close(self) -> None:
        self._server.close()

    # ------------------------------------------------------------------------------------------ image

    def set_image(self, image: Any, contrast_limits: Sequence[float] | None = None) -> None:
        """Send an image to the server (unless it holds it already) and use it for the next prompts."""
        from .embedding_cache import content_hash

        image = np.asarray(image)
        limits = None if contrast_limits is None else (float(contrast_limits[0]), float(contrast_limits[1]))
        key = content_hash(image, limits)
        self._keep_pixels(key, image, limits)
        known = self._call("GET", f"/v1/images/{key}", allow=(404,))
        if known.status_code == 404 or known.json().get("original_size") is None:
            info = self._upload(key)
        else:
            info = known.json()
        self._use(info)

    def _upload(self, key: str) -> dict[str, Any]:
        with self._lock:
            kept = self._pixels.get(key)
        if kept is None:
            raise RemoteError(
                f"The server at {self.url} no longer holds this image (it was restarted?) and its pixels are "
                "not kept here: set the image again (predictor.set_image(image))."
            )
        image, limits = kept
        params = {} if limits is None else {"contrast_low": limits[0], "contrast_high": limits[1]}
        headers = {"Content-Type": NPY}
        if self.compress:
            headers["Content-Encoding"] = DEFLATE
        body = encode_array(image, compress=self.compress)
        info = self._call("POST", "/v1/images", content=body, headers=headers, params=params).json()
        if info["id"] != key:
            raise RemoteError(f"The server named the image {info['id']}, not {key}: it runs another version.")
        return info

    def _use(self, info: dict[str, Any]) -> None:
        self.image_id = str(info["id"])
        self.original_size = (int(info["original_size"][0]), int(info["original_size"][1]))
        self.input_size = None if info["input_size"] is None else tuple(int(v) for v in info["input_size"])  # type: ignore[assignment]
        self.image_tiled = bool(info["tiled"])

    def _keep_pixels(self, key: str, image: np.ndarray, limits: tuple[float, float] | None) -> None:
        with self._lock:
            self._pixels[key] = (image, limits)
            self._pixels.move_to_end(key)
            while (
                len(self._pixels) > 1 and sum(p.nbytes for p, _ in self._pixels.values()) > self._pixel_budget
            ):
                self._pixels.popitem(last=False)

    def reset_image(self) -> None:
        self.image_id = self.original_size = self.input_size = None

    @property
    def is_image_set(self) -> bool:
        return self.image_id is not None

    @property
    def tile_grid(self) -> list[Any]:
        return []

    def get_image_embedding(self) -> dict[str, Any]:
        """A reference to the server's embedding of the image set (its id and sizes, not the arrays)."""
        if self.image_id is None:
            raise ValueError(NO_IMAGE)
        return {
            REFERENCE: self.image_id,
            "original_size": self.original_size,
            "input_size": self.input_size,
            "tiled": self.image_tiled,
        }

    def set_image_embedding(self, state: dict[str, Any], *, image: np.ndarray | None = None) -> None:
        """Use an image by the reference ``get_image_embedding`` gave; image: its pixels, sent again if the
        server has forgotten it."""
        if not isinstance(state, dict) or REFERENCE not in state:
            raise ValueError(
                "This embedding was computed by a local model: a remote predictor takes the references its "
                "own get_image_embedding() gives; call set_image(image) to send the image to the server."
            )
        key = str(state[REFERENCE])
        if image is not None:
            self._keep_pixels(key, np.asarray(image), self._limits_of(key))
        self._use({"id": key, "original_size": state["original_size"], "input_size": state["input_size"],
                   "tiled": state.get("tiled", False)})  # fmt: skip

    def _limits_of(self, key: str) -> tuple[float, float] | None:
        with self._lock:
            kept = self._pixels.get(key)
        return None if kept is None else kept[1]

    # ------------------------------------------------------------------------------------------ vocabulary

    def set_vocabulary(
        self,
        vocabulary: Any,
        *,
        seen: Sequence[bool] | None = None,
        text_embeddings: Any = None,
        cache_dir: Any = None,
    ) -> None:
        """Set the class names objects are named from (the server computes their text embeddings once;
        ``text_embeddings`` and ``cache_dir`` are the local predictor's and are not used)."""
        vocabulary = as_vocabulary(vocabulary)
        if seen is not None:
            vocabulary = Vocabulary(vocabulary.synonyms, list(seen))
        answer = self._post_json("/v1/vocabularies", _vocabulary_body(vocabulary))
        self.vocabulary, self._vocabulary_id = vocabulary, str(answer["id"])

    # ------------------------------------------------------------------------------------------ predict

    def predict(
        self,
        points: Any = None,
        point_labels: Any = None,
        boxes: Any = None,
        *,
        multimask_output: bool = False,
        top_k: int = 5,
    ) -> Prediction:
        """Segment and name N objects on the server; see ``OVSAMPredictor.predict``. The masks come back as the
        local predictor gives them (dense, or ``CompactMasks`` for an image the server tiles);
        ``low_res_logits`` stays on the server (an empty (N, M, 0, 0) array)."""
        top_k = check_top_k(top_k)
        points, point_labels, boxes = _one_object_form(points, point_labels, boxes)
        body = {
            "points": _listed(points), "point_labels": _listed(point_labels), "boxes": _listed(boxes),
            "multimask_output": bool(multimask_output), "top_k": top_k,
        }  # fmt: skip
        # a tiled image's tiles are encoded by the prompts that need them: the long timeout
        data = self._on_image("predict", body, timeout=None if self.image_tiled else self.prompt_timeout)
        assert self.original_size is not None
        return prediction_from_wire(data, self.original_size)

    def annotate(self, options: dict[str, Any], classes: Sequence[str] | str | None = None) -> Any:
        """Segment and name every object of the image set (``AutomaticAnnotator`` options) on the server."""
        if isinstance(classes, str):
            classes = [classes]
        body = {"options": options, "classes": None if classes is None else list(classes)}
        return instances_from_wire(self._on_image("annotate", body), self._max_bytes)

    def name_labels(self, label_image: np.ndarray, *, refine: bool = False, top_k: int = 3) -> Any:
        """Name every label of a label image of the image set, on the server (see ``automatic.name_labels``)."""
        from .serve.wire import array_to_text

        body = {"labels": array_to_text(np.asarray(label_image)), "refine": bool(refine), "top_k": int(top_k)}
        return instances_from_wire(self._on_image("name-labels", body), self._max_bytes)

    @property
    def _max_bytes(self) -> int:
        return int(self.server_info.get("limits", {}).get("max_body_bytes", 2**31))

    def _on_image(
        self, action: str, body: dict[str, Any], *, vocabulary: bool = True, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST to the image's endpoint; an image, vocabulary or examples the server has forgotten (after a
        restart, or on another replica) are sent again."""
        if self.image_id is None:
            raise ValueError(NO_IMAGE)
        if vocabulary and (self.vocabulary is None or self._vocabulary_id is None):
            raise ValueError(NO_VOCABULARY)
        error: tuple[str, str] = ("", "")
        inline: dict[str, Any] = {}
        for _ in range(8):  # behind a load balancer, each attempt may reach another replica
            ids = (
                {"vocabulary": self._vocabulary_id, "examples": self._examples_reference()}
                if vocabulary
                else {}
            )
            request = {**body, **ids, **inline}
            path = f"/v1/images/{self.image_id}/{action}"
            response = self._post_json(path, request, allow=(404,), timeout=timeout)
            if response.status_code != 404:
                return response.json()
            error = error_of(response)
            if error[0] == "unknown_vocabulary" and self.vocabulary is not None:
                # the request itself carries it from now on: any server (or replica) can take it
                inline["vocabulary_classes"] = _vocabulary_body(self.vocabulary)
            elif error[0] == "unknown_examples" and self._examples is not None:
                inline["examples_set"] = self._examples_body()
            elif error[0] == "unknown_image":
                self._use(self._upload(self.image_id))
            else:
                break
        raise RemoteError(f"The server at {self.url} answered 404: {error[1]}")

    # ------------------------------------------------------------------------------------------ HTTP

    def _post_json(
        self, path: str, body: dict[str, Any], allow: tuple[int, ...] = (), timeout: float | None = None
    ) -> Any:
        return self._server.post_json(path, body, allow, timeout)

    def _call(self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> Any:
        return self._server.call(method, path, allow=allow, **kwargs)


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    from .serve import is_loopback

    return is_loopback(urlsplit(url).hostname)


def _vocabulary_body(vocabulary: Vocabulary) -> dict[str, Any]:
    """A vocabulary as ``POST /v1/vocabularies`` takes it: class entries ("name, synonym") and seen flags."""
    return {"classes": [", ".join(synonyms) for synonyms in vocabulary.synonyms], "seen": vocabulary.seen}


def _listed(value: Any) -> Any:
    return None if value is None else np.asarray(value, np.float64).tolist()


def _one_object_form(points: Any, labels: Any, boxes: Any) -> tuple[Any, Any, Any]:
    """One object's prompts ((P, 2) points, (P,) labels, (4,) box) as a batch of one, the form the server
    decodes together with other clients' prompts; anything else is sent as it is (the server checks it)."""
    p = None if points is None else np.asarray(points)
    lab = None if labels is None else np.asarray(labels)
    b = None if boxes is None else np.asarray(boxes)
    single_points = p is not None and p.ndim == 2 and lab is not None and lab.ndim == 1
    single_box = b is not None and b.ndim == 1
    if single_points and (b is None or single_box):
        p, lab = p[None], lab[None]  # type: ignore[index]
        b = None if b is None else b[None]
    elif single_box and p is None:
        b = b[None]  # type: ignore[index]
    return p, lab, b
