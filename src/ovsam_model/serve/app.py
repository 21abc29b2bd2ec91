"""The HTTP API of ``python -m ovsam_model.serve`` (FastAPI; the schema is served at ``/docs`` and
``/openapi.json``).

Version 1, under ``/v1``:

- ``GET /v1/health``: liveness, without a token (for load balancers);
- ``GET /v1/models``: the model served (name, fingerprint, input size, device), its default classes, the
  server's limits;
- ``POST /v1/images?contrast_low=&contrast_high=``: an image or a tile as ``.npy`` bytes (``Content-Type:
  application/x-npy``, optionally ``Content-Encoding: deflate``) -> its id (a hash of its content and contrast
  limits), encoded once; ``GET /v1/images/{id}``: whether the server holds it (then it is not sent again);
- ``POST /v1/vocabularies``: class entries -> an id (text embeddings computed once);
- ``POST /v1/images/{id}/predict``: point and box prompts -> masks (run-length encoded, cropped to their
  boxes), predicted IoU, class names, scores and alternatives;
- ``POST /v1/images/{id}/annotate``: segment and name everything (``AutomaticAnnotator`` options);
- ``POST /v1/images/{id}/name-labels``: name the labels of a label image.

Errors are JSON ``{"error": code, "message": text}``: 400 a malformed body, 401 a missing or wrong token, 404
an unknown image or vocabulary id (send it again), 413 too large, 422 input the model refuses (the local
predictor's message), 503 busy (``Retry-After``), 504 over the request time limit. Every answer carries a
``Server-Timing`` header (queue and compute milliseconds). No endpoint reads or writes a file a client names.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..vocabulary import Vocabulary
from .engine import Busy, Engine, Job, UnknownId, examples_id, image_id, vocabulary_id
from .schema import (
    AnnotateRequest,
    ExampleFeaturesRequest,
    ExamplesRequest,
    NameLabelsRequest,
    PredictRequest,
    VocabularyRequest,
)
from .wire import (
    DEFLATE,
    NPY,
    WireError,
    array_from_text,
    decode_array,
    instances_to_wire,
    prediction_to_wire,
)

MiB = 1024**2


@dataclass
class ServerSettings:
    """Limits and access. token: the bearer token clients must send (None: no token, for localhost only).
    max_body_bytes: largest request body (and decompressed image). max_image_pixels: largest image (H x W).
    timeout: seconds a request may wait and run before a 504."""

    token: str | None = None
    max_body_bytes: int = 512 * MiB
    max_image_pixels: int = 2**27
    timeout: float = 300.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``engine`` (see the module docstring)."""
    settings = settings or ServerSettings()
    app = FastAPI(
        title="OV-SAM server",
        version=__version__,
        description="Segment and name objects with Open-Vocabulary SAM: encoded images are shared by content.",
    )
    app.state.engine, app.state.settings = engine, settings

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": error.code, "message": error.message}, status_code=error.status, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in error.errors()
        )
        return JSONResponse({"error": "invalid_request", "message": problems}, status_code=400)

    def authorised(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), settings.token.encode()
        ):
            raise ApiError(
                401, "unauthorized",
                "This server needs a token: send 'Authorization: Bearer <token>' with the token it was "
                "started with (--token-file or OVSAM_TOKEN).",
                {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    guarded = [Depends(authorised)]

    async def run(request: Request, fn: Any, merge: tuple[Any, ...] | None = None, **payload: Any) -> Any:
        try:
            job = engine.submit(fn, merge, **payload)
        except Busy as busy:
            raise ApiError(503, "busy", str(busy), {"Retry-After": f"{busy.retry_after:g}"}) from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(job.future), settings.timeout)
        except asyncio.TimeoutError:
            job.future.cancel()
            raise ApiError(504, "timeout", f"The request took longer than {settings.timeout:g} s.") from None
        except UnknownId as unknown:
            raise ApiError(404, f"unknown_{unknown.kind}", str(unknown)) from None
        except (ValueError, TypeError) as error:
            raise ApiError(422, "invalid_input", str(error)) from None
        except Exception as error:  # noqa: BLE001 - the server keeps serving the others
            raise ApiError(500, "server_error", f"{type(error).__name__}: {error}") from None
        request.state.job = job
        return result

    @app.middleware("http")
    async def _timing(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        total = (time.perf_counter() - started) * 1000
        job: Job | None = getattr(request.state, "job", None)
        parts = []
        if job is not None and job.started:
            parts += [f"queue;dur={(job.started - job.queued) * 1000:.2f}",
                      f"compute;dur={(job.finished - job.started) * 1000:.2f}"]  # fmt: skip
        parts.append(f"total;dur={total:.2f}")
        response.headers["Server-Timing"] = ", ".join(parts)
        return response

    async def body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            raise ApiError(413, "too_large", _too_large(int(length), settings.max_body_bytes))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ApiError(413, "too_large", _too_large(size, settings.max_body_bytes))
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_body(request: Request, model: type[BaseModel]) -> Any:
        raw = await body(request)
        kind = _media_type(request)
        if kind != "application/json":
            raise ApiError(
                415, "unsupported_media_type", f"Send JSON (Content-Type: application/json), not {kind!r}."
            )
        try:
            return model.model_validate_json(raw)
        except ValueError as error:
            raise ApiError(
                400, "invalid_request", f"The body is not the JSON this endpoint takes: {error}"
            ) from None

    def vocabulary_of(data: VocabularyRequest) -> Vocabulary:
        try:
            return Vocabulary(data.classes, data.seen)
        except ValueError as error:
            raise ApiError(422, "invalid_input", str(error)) from None

    async def example_set_of(data: ExamplesRequest) -> Any:
        from ..exemplars.store import ExampleSet

        try:
            features = await run_in_threadpool(array_from_text, data.features, settings.max_body_bytes)
            return ExampleSet(features, data.class_names, data.model, data.layout)
        except WireError as error:
            raise ApiError(400, "invalid_body", str(error)) from None
        except ValueError as error:
            raise ApiError(422, "invalid_input", str(error)) from None

    async def instances_answer(request: Request, work: Any) -> Response:
        """Run ``work`` (it returns ``Instances``) on the model thread; its answer as JSON."""
        instances = await run(request, work)
        wire = await run_in_threadpool(instances_to_wire, instances)
        return Response(json.dumps(wire), media_type="application/json")

    async def adopt(request: Request, data: Any) -> None:
        """Take the vocabulary and examples a request carries, unless held already (checked against its ids)."""
        inline = data.vocabulary_classes
        if inline is not None and data.vocabulary not in engine.vocabularies:
            vocabulary = vocabulary_of(inline)
            if vocabulary_id(vocabulary) != data.vocabulary:
                raise ApiError(422, "invalid_input", "vocabulary_classes are not the vocabulary of that id.")
            await run(request, lambda: engine.add_vocabulary(vocabulary))
        inline_examples = data.examples_set
        if inline_examples is not None and data.examples not in engine.example_sets:
            example_set = await example_set_of(inline_examples)
            if examples_id(example_set) != data.examples:
                raise ApiError(422, "invalid_input", "examples_set is not the example set of that id.")
            await run(request, lambda: engine.add_examples(example_set))

    # ------------------------------------------------------------------------------------------ endpoints

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "queued": engine.queued}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        config = engine.model.config
        vocabulary = engine.predictor.vocabulary
        return {
            "version": __version__,
            "models": [{
                "name": config.name,
                "fingerprint": engine.fingerprint,
                "image_size": config.image_size,
                "embed_dim": config.embed_dim,
                "device": str(engine.predictor.device),
                "classes": None if vocabulary is None else vocabulary.to_dict(),
                "tiling": engine.predictor.tiling is not None,
                "examples": _examples_layout(engine.model),
            }],
            "limits": {"max_body_bytes": settings.max_body_bytes, "max_image_pixels": settings.max_image_pixels,
                       "timeout": settings.timeout, "max_queue": engine.max_queue},
            "stats": dict(engine.stats),
        }  # fmt: skip

    @app.get("/v1/images/{key}", dependencies=guarded)
    async def image_info(key: str) -> dict[str, Any]:
        entry = engine.known_image(key)
        if entry is not None:
            return entry.describe(key)
        if await run_in_threadpool(engine.on_disk, key):
            return {"id": key, "original_size": None, "input_size": None, "tiled": False, "on_disk": True}
        raise ApiError(404, "unknown_image", str(UnknownId("image", key)))

    @app.post(
        "/v1/images",
        dependencies=guarded,
        openapi_extra={"requestBody": {"content": {NPY: {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def upload(
        request: Request, contrast_low: float | None = None, contrast_high: float | None = None
    ) -> dict[str, Any]:
        kind = _media_type(request)
        if kind != NPY:
            raise ApiError(415, "unsupported_media_type",
                           f"Send the image as np.save bytes with Content-Type: {NPY} (optionally "
                           f"Content-Encoding: {DEFLATE}), not {kind!r}.")  # fmt: skip
        if (contrast_low is None) != (contrast_high is None):
            raise ApiError(422, "invalid_input", "Give both contrast_low and contrast_high, or neither.")
        limits = None if contrast_low is None else (float(contrast_low), float(contrast_high))  # type: ignore[arg-type]
        raw = await body(request)
        try:
            image = await run_in_threadpool(
                decode_array, raw, request.headers.get("content-encoding"), settings.max_body_bytes
            )
        except WireError as error:
            status = 413 if "limit" in str(error) else 400
            raise ApiError(status, "too_large" if status == 413 else "invalid_body", str(error)) from None
        if image.ndim >= 2 and image.shape[0] * image.shape[1] > settings.max_image_pixels:
            raise ApiError(413, "too_large", f"The image is {image.shape[1]}x{image.shape[0]} pixels; this server "
                           f"takes at most {settings.max_image_pixels} pixels: send tiles of it.")  # fmt: skip
        key = await run_in_threadpool(image_id, image, limits)
        entry = engine.known_image(key)
        if entry is not None:
            if entry.pixels is None and entry.predictor is None:  # read from disk: examples measure pixels
                entry.pixels = image
            return {**entry.describe(key), "encoded": False}

        def add() -> dict[str, Any]:
            entry, encoded = engine.add_image(key, image, limits)
            return {**entry.describe(key), "encoded": encoded}

        return await run(request, add)

    @app.post("/v1/vocabularies", dependencies=guarded)
    async def vocabularies(request: Request) -> dict[str, Any]:
        data: VocabularyRequest = await json_body(request, VocabularyRequest)
        vocabulary = vocabulary_of(data)
        key = await run(request, lambda: engine.add_vocabulary(vocabulary))
        return {"id": key, "names": vocabulary.names}

    @app.post("/v1/images/{key}/predict", dependencies=guarded)
    async def predict(request: Request, key: str) -> Response:
        data: PredictRequest = await json_body(request, PredictRequest)
        await adopt(request, data)
        points, labels = _array(data.points, "points"), _array(data.point_labels, "point_labels")
        boxes = _array(data.boxes, "boxes")
        options = {"multimask_output": data.multimask_output, "top_k": data.top_k}

        def one() -> Any:
            predictor = engine.bind(key, data.vocabulary, data.examples)
            return predictor.predict(points, labels, boxes, **options)

        merge, count = _merge_key(key, data.vocabulary, points, labels, boxes, options)
        merge = None if merge is None else (*merge, data.examples)
        result = await run(
            request, one, merge, image=key, vocabulary=data.vocabulary, examples=data.examples, points=points,
            point_labels=labels, boxes=boxes, count=count, **options,
        )  # fmt: skip
        wire = await run_in_threadpool(prediction_to_wire, result)
        return Response(json.dumps(wire), media_type="application/json")

    @app.post("/v1/images/{key}/annotate", dependencies=guarded)
    async def annotate(request: Request, key: str) -> Response:
        data: AnnotateRequest = await json_body(request, AnnotateRequest)
        await adopt(request, data)
        from ..automatic import AutomaticAnnotator

        def work() -> Any:
            predictor = engine.bind(key, data.vocabulary, data.examples)
            return AutomaticAnnotator(predictor, **data.options).annotate(classes=data.classes)

        return await instances_answer(request, work)

    @app.post("/v1/images/{key}/name-labels", dependencies=guarded)
    async def name_labels_endpoint(request: Request, key: str) -> Response:
        data: NameLabelsRequest = await json_body(request, NameLabelsRequest)
        await adopt(request, data)
        from ..automatic import name_labels

        try:
            labels = await run_in_threadpool(array_from_text, data.labels, settings.max_body_bytes)
        except WireError as error:
            raise ApiError(400, "invalid_body", str(error)) from None

        def work() -> Any:
            predictor = engine.bind(key, data.vocabulary, data.examples)
            return name_labels(predictor, labels, refine=data.refine, top_k=data.top_k)

        return await instances_answer(request, work)

    @app.post("/v1/examples", dependencies=guarded)
    async def examples(request: Request) -> dict[str, Any]:
        data: ExamplesRequest = await json_body(request, ExamplesRequest)
        example_set = await example_set_of(data)
        key = await run(request, lambda: engine.add_examples(example_set))
        return {"id": key, "classes": example_set.classes}

    @app.post("/v1/images/{key}/example-features", dependencies=guarded)
    async def example_features(request: Request, key: str) -> dict[str, Any]:
        data: ExampleFeaturesRequest = await json_body(request, ExampleFeaturesRequest)
        from .wire import array_to_text, masks_from_wire

        def work() -> Any:
            predictor = engine.bind(key, None)
            if predictor._pixels is None:
                raise UnknownId("image", key)  # its pixels were not kept: the client sends the image again
            assert predictor.original_size is not None
            masks = masks_from_wire(data.masks, predictor.original_size, 1, dense=False)
            return predictor.example_features(masks)

        features = await run(request, work)
        return {"features": await run_in_threadpool(array_to_text, features)}

    return app


def _examples_layout(model: Any) -> dict[str, Any]:
    from ..exemplars.features import SHAPE_FEATURE_NAMES
    from ..exemplars.learning import embedding_width, feature_layout

    return {"layout": feature_layout(model), "width": embedding_width(model) + len(SHAPE_FEATURE_NAMES)}


def _media_type(request: Request) -> str:
    """The request's media type, without parameters ("application/json; charset=utf-8" -> "application/json")."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _array(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        return np.asarray(value, np.float64)
    except (ValueError, TypeError):
        raise ApiError(422, "invalid_input", f"{name} must be a (nested) list of numbers.") from None


def _merge_key(
    key: str, vocabulary: str, points: Any, labels: Any, boxes: Any, options: dict[str, Any]
) -> tuple[tuple[Any, ...] | None, int]:
    """Requests that can be decoded together share this key: the same image, vocabulary and options, and
    prompts of one regular form (N boxes, or N objects of P points, with or without boxes)."""
    n_points = points.shape[0] if points is not None and points.ndim == 3 else None
    n_boxes = boxes.shape[0] if boxes is not None and boxes.ndim == 2 else None
    if points is not None and (n_points is None or labels is None or labels.shape != points.shape[:2]):
        return None, 0
    if boxes is not None and (n_boxes is None or boxes.shape[1] != 4):
        return None, 0
    if n_points is not None and n_boxes is not None and n_points != n_boxes:
        return None, 0
    count = n_points if n_points is not None else n_boxes
    if not count:
        return None, 0
    width = None if points is None else points.shape[1]
    return (key, vocabulary, width, boxes is not None, options["multimask_output"], options["top_k"]), count


def _too_large(size: int, limit: int) -> str:
    return (
        f"The request is {size} bytes; this server takes at most {limit} bytes (--max-body-mb): send tiles."
    )
