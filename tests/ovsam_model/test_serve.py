"""The OV-SAM server and ``RemotePredictor`` over real HTTP on 127.0.0.1 (uvicorn in a thread, ``tiny`` model):
parity with the local predictor, images known by content, the disk cache, batching, auth, limits, the busy
and timeout answers, bad input, and a client that recovers from a server restart."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from ovsam_model.automatic import AutomaticAnnotator, name_labels  # noqa: E402
from ovsam_model.embedding_cache import EmbeddingCache, make_key  # noqa: E402
from ovsam_model.predictor import OVSAMPredictor  # noqa: E402
from ovsam_model.remote import RemoteError, RemotePredictor  # noqa: E402
from ovsam_model.serve.app import ServerSettings, create_app  # noqa: E402
from ovsam_model.serve.engine import Engine  # noqa: E402
from ovsam_model.serve.local import free_port, serve_in_thread  # noqa: E402
from ovsam_model.serve.wire import encode_array, mask_runs, runs_mask  # noqa: E402

CLASSES = ["nucleus", "rod, bacterium", "ring"]
TOKEN = "s3cret-token"


@contextmanager
def server(model, *, port=None, **options) -> Iterator[tuple[str, Engine]]:
    settings = ServerSettings(
        **{k: options.pop(k) for k in list(options) if k in ServerSettings.__annotations__}
    )
    engine = Engine(OVSAMPredictor(model), **options)
    try:
        with serve_in_thread(create_app(engine, settings), port=port) as url:
            yield url, engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def served(tiny_model) -> Iterator[tuple[str, Engine]]:
    with server(tiny_model, token=TOKEN) as running:
        yield running


@pytest.fixture
def remote(served) -> RemotePredictor:
    predictor = RemotePredictor(served[0], token=TOKEN)
    predictor.set_vocabulary(CLASSES)
    return predictor


@pytest.fixture
def local(tiny_model) -> OVSAMPredictor:
    predictor = OVSAMPredictor(tiny_model)
    predictor.set_vocabulary(CLASSES)
    return predictor


def same(a, b, atol: float = 1e-6) -> None:
    np.testing.assert_array_equal(np.asarray(a.masks), np.asarray(b.masks))
    assert a.class_names == b.class_names and a.topk_names == b.topk_names
    np.testing.assert_allclose(a.iou, b.iou, atol=atol)
    np.testing.assert_allclose(a.topk_scores, b.topk_scores, atol=atol)
    np.testing.assert_allclose(a.background, b.background, atol=atol)


PROMPTS = [
    {"boxes": [40, 30, 80, 60]},
    {"points": [[60, 45], [10, 10]], "point_labels": [1, 0]},
    {"boxes": [[40, 30, 80, 60], [0, 0, 50, 50]], "multimask_output": True, "top_k": 2},
    {
        "points": [[[60, 45]], [[20, 70]]],
        "point_labels": [[1], [1]],
        "boxes": [[40, 30, 80, 60], [5, 50, 40, 85]],
    },
]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["box", "clicks", "multimask", "both"])
def test_remote_predictions_equal_local_ones(remote, local, image16, prompt) -> None:
    local.set_image(image16)
    remote.set_image(image16)
    result = remote.predict(**prompt)
    same(result, local.predict(**prompt))
    assert result.masks.shape[-2:] == image16.shape and result.low_res_logits.shape[2:] == (0, 0)
    assert remote.last_timing is not None and remote.last_timing.round_trip >= remote.last_timing.server > 0


def test_contrast_limits_and_rgb_travel_with_the_image(remote, local, image16) -> None:
    rgb = np.stack([image16 // 256] * 3, axis=-1).astype(np.uint8)
    for image, limits in ((image16, (1000.0, 30000.0)), (rgb, None)):
        local.set_image(image, limits)
        remote.set_image(image, limits)
        same(remote.predict(boxes=[40, 30, 80, 60]), local.predict(boxes=[40, 30, 80, 60]))


def test_an_image_is_sent_and_encoded_once_whoever_sends_it(served, image16) -> None:
    url, engine = served
    image = image16 + 7  # not sent by another test
    encoded = engine.stats["encoded"]
    first = RemotePredictor(url, token=TOKEN)
    first.set_image(image)
    second = RemotePredictor(url, token=TOKEN)
    second.set_image(image.copy())
    first.set_image(image)
    assert engine.stats["encoded"] == encoded + 1
    assert first.image_id == second.image_id


def test_two_clients_uploading_one_image_at_once_both_get_it(served, image16) -> None:
    url, engine = served
    image = image16 + 11
    encoded = engine.stats["encoded"]
    clients = [RemotePredictor(url, token=TOKEN) for _ in range(2)]
    errors: list[BaseException] = []

    def upload(client) -> None:
        try:
            client.set_image(image)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and clients[0].image_id == clients[1].image_id
    assert engine.stats["encoded"] == encoded + 1


def test_concurrent_clients_all_get_their_own_answers(served, local, image16) -> None:
    url, _ = served
    local.set_image(image16)
    boxes = [[x, 10 + x // 3, x + 40, 50 + x // 3] for x in range(0, 100, 7)]
    expected = [local.predict(boxes=b) for b in boxes]
    failures: list[str] = []

    def client(offset: int) -> None:
        predictor = RemotePredictor(url, token=TOKEN)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        for i in range(len(boxes)):
            j = (i + offset) % len(boxes)
            try:
                same(predictor.predict(boxes=boxes[j]), expected[j])
            except AssertionError as error:
                failures.append(f"client {offset} box {j}: {error}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures


def test_waiting_prompt_requests_are_decoded_together(tiny_model, local, image16) -> None:
    """Requests queued behind a busy model thread for one image and vocabulary are merged into one call, and
    each client still gets its own answer."""
    with server(tiny_model) as (url, engine):
        predictor = RemotePredictor(url)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        local.set_image(image16)
        gate = threading.Event()
        engine.submit(lambda: gate.wait(30))  # holds the model thread
        boxes = [[10 * i, 5, 10 * i + 40, 60] for i in range(6)]
        results: dict[int, object] = {}
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, predictor.predict(boxes=boxes[i])))
            for i in range(len(boxes))
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while engine.queued < len(boxes) + 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        calls = engine.stats["model_calls"]
        gate.set()
        for t in threads:
            t.join(30)
        assert engine.stats["merged_prompts"] == len(boxes)
        assert engine.stats["model_calls"] == calls + 2  # the gate, then one call for the six requests
        for i, box in enumerate(boxes):
            same(results[i], local.predict(boxes=box))


def test_segment_everything_and_naming_labels_run_on_the_server(remote, local, image16) -> None:
    local.set_image(image16)
    remote.set_image(image16)
    options = {"points_per_side": 6, "min_stability": 0.0, "min_score": 0.0, "max_background": 1.0}
    served, mine = (
        AutomaticAnnotator(remote, **options).annotate(),
        AutomaticAnnotator(local, **options).annotate(),
    )
    assert len(mine) > 0
    np.testing.assert_array_equal(served.labels, mine.labels)
    assert served.class_names == mine.class_names
    np.testing.assert_allclose(served.confidence, mine.confidence, atol=1e-6)
    labels = np.zeros(image16.shape, np.int32)
    labels[30:60, 40:80], labels[5:20, 5:25] = 7, 300
    served, mine = name_labels(remote, labels, refine=True), name_labels(local, labels, refine=True)
    np.testing.assert_array_equal(served.labels, mine.labels)
    assert list(served.ids) == [7, 300] and served.class_names == mine.class_names
    np.testing.assert_allclose(served.scores, mine.scores, atol=1e-6)


def test_the_disk_cache_is_the_plugins_format_and_survives_a_restart(
    tiny_model, local, image16, tmp_path
) -> None:
    folder = tmp_path / "cache"
    with server(tiny_model, cache_dir=str(folder)) as (url, engine):
        RemotePredictor(url).set_image(image16)
        fingerprint = engine.fingerprint
        assert engine.stats["encoded"] == 1
    plugin_cache = EmbeddingCache(store_path=folder)
    assert make_key(fingerprint, image16) in plugin_cache  # a napari session on this folder reuses it
    with server(tiny_model, cache_dir=str(folder)) as (url, engine):
        predictor = RemotePredictor(url)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        local.set_image(image16)
        # the cache keeps float16, as the plugin's does
        same(predictor.predict(boxes=[40, 30, 80, 60]), local.predict(boxes=[40, 30, 80, 60]), atol=1e-4)
        assert engine.stats["encoded"] == 0 and engine.stats["from_disk"] == 1


def test_a_client_recovers_from_a_server_restart(tiny_model, local, image16) -> None:
    port = free_port()
    local.set_image(image16)
    expected = local.predict(boxes=[40, 30, 80, 60])
    with server(tiny_model, port=port) as (url, _):
        predictor = RemotePredictor(url, backoff=0.05)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        same(predictor.predict(boxes=[40, 30, 80, 60]), expected)
    with pytest.raises(RemoteError, match="Cannot reach the OV-SAM server"):
        predictor.predict(boxes=[40, 30, 80, 60])
    with server(tiny_model, port=port) as (url, engine):  # a new server: no image, no vocabulary
        same(predictor.predict(boxes=[40, 30, 80, 60]), expected)
        assert engine.stats["encoded"] == 1 and len(engine.vocabularies) == 1


def test_the_embedding_reference_restores_the_image(remote, local, image16) -> None:
    remote.set_image(image16)
    state = remote.get_image_embedding()
    assert state["original_size"] == image16.shape and len(state) < 8  # a reference, not arrays
    other = RemotePredictor(remote.url, token=TOKEN)
    other.set_vocabulary(CLASSES)
    other.set_image_embedding(state, image=image16)
    local.set_image(image16)
    same(other.predict(boxes=[40, 30, 80, 60]), local.predict(boxes=[40, 30, 80, 60]))
    with pytest.raises(ValueError, match="computed by a local model"):
        other.set_image_embedding(local.get_image_embedding())


# ------------------------------------------------------------------------------------------ access


def test_a_token_is_required_and_compared(served) -> None:
    url, _ = served
    assert httpx.get(f"{url}/v1/health").status_code == 200  # liveness needs no token
    answer = httpx.get(f"{url}/v1/models")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    with pytest.raises(RemoteError, match="needs a token"):
        RemotePredictor(url)
    with pytest.raises(RemoteError, match="refused the token"):
        RemotePredictor(url, token="nope")


def test_the_client_names_an_unreachable_server_and_another_model(served) -> None:
    with pytest.raises(RemoteError, match="Cannot reach the OV-SAM server"):
        RemotePredictor(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0.01)
    with pytest.raises(RemoteError, match="runs the model 'tiny', not 'ovsam_rn50x16'"):
        RemotePredictor(served[0], token=TOKEN, model="ovsam_rn50x16")
    with pytest.raises(RemoteError, match="http:// or https://"):
        RemotePredictor("gpu-box:8765")


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 5), np.uint8),
        np.zeros((2, 3, 4, 5), np.uint8),
        np.array([[1.0, np.nan], [2.0, 3.0]], np.float32),
        np.zeros((4, 4), np.complex64),
        np.zeros((3, 40, 50), np.uint8),
        np.array([[1.0, np.inf]], np.float64),
    ],
    ids=["empty", "4d", "nan", "complex", "channels-first", "inf"],
)
def test_bad_images_get_the_local_predictors_message(remote, local, image) -> None:
    with pytest.raises(ValueError) as expected:
        local.set_image(image)
    with pytest.raises(ValueError) as got:
        remote.set_image(image)
    assert str(got.value) == str(expected.value)


def test_bad_prompts_get_the_local_predictors_message(remote, local, image16) -> None:
    local.set_image(image16)
    remote.set_image(image16)
    for prompt in ({"boxes": [[1, 2, 3]]}, {"points": [[1, 2]], "point_labels": [1, 1]}, {}):
        with pytest.raises(ValueError) as expected:
            local.predict(**prompt)
        with pytest.raises(ValueError) as got:
            remote.predict(**prompt)
        assert str(got.value) == str(expected.value)


def headers(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **extra}


def test_malformed_requests_get_a_status_and_a_message(served, remote, image16) -> None:
    url, _ = served
    remote.set_image(image16)
    predict = f"{url}/v1/images/{remote.image_id}/predict"
    npy, deflate = {"Content-Type": "application/x-npy"}, {"Content-Encoding": "deflate"}
    images = f"{url}/v1/images"
    cases = [
        (
            httpx.post(
                predict, content=b"{not json", headers=headers(**{"Content-Type": "application/json"})
            ),
            400,
        ),
        (httpx.post(predict, content=b"boxes", headers=headers(**{"Content-Type": "text/plain"})), 415),
        (httpx.post(predict, json={"boxes": [1, 2, 3, 4]}, headers=headers()), 400),  # no vocabulary id
        (httpx.post(images, content=b"\x00" * 10, headers=headers(**{"Content-Type": "image/tiff"})), 415),
        (httpx.post(images, content=b"not npy", headers=headers(**npy)), 400),
        (httpx.post(images, content=b"not zlib", headers=headers(**npy, **deflate)), 400),
        (httpx.post(images, content=b"x", headers=headers(**npy, **{"Content-Encoding": "br"})), 400),
        (httpx.post(f"{url}/v1/vocabularies", json={"classes": []}, headers=headers()), 422),
    ]
    for answer, status in cases:
        assert answer.status_code == status, answer.text
        assert set(answer.json()) == {"error", "message"} and answer.json()["message"]


def test_a_pickled_array_is_refused(served) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    answer = httpx.post(f"{served[0]}/v1/images", content=buffer.getvalue(),
                        headers=headers(**{"Content-Type": "application/x-npy"}))  # fmt: skip
    assert answer.status_code == 400 and "pickle" in answer.json()["message"].lower()


def test_unknown_ids_are_404_with_advice(served, remote, image16) -> None:
    url, _ = served
    remote.set_image(image16)
    answer = httpx.post(f"{url}/v1/images/0123abcd/predict", json={"vocabulary": "x", "boxes": [1, 2, 3, 4]},
                        headers=headers())  # fmt: skip
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_image"
    assert "upload it again" in answer.json()["message"]
    answer = httpx.post(f"{url}/v1/images/{remote.image_id}/predict", json={"vocabulary": "x", "boxes": [1, 2, 3, 4]},
                        headers=headers())  # fmt: skip
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_vocabulary"


def test_size_limits_answer_413(tiny_model, image16) -> None:
    with server(tiny_model, max_body_bytes=20_000, max_image_pixels=5_000) as (url, engine):
        predictor = RemotePredictor(url, compress=False)
        with pytest.raises(ValueError, match="at most 20000 bytes"):
            predictor.set_image(image16)  # 27 kB of pixels
        with pytest.raises(ValueError, match="at most 5000 pixels: send tiles"):
            predictor.set_image(image16[:60, :100])
        bomb = encode_array(np.zeros((1000, 1000), np.uint8))  # 1 MB that compresses to ~1 kB
        answer = httpx.post(f"{url}/v1/images", content=bomb,
                            headers={"Content-Type": "application/x-npy", "Content-Encoding": "deflate"})  # fmt: skip
        assert len(bomb) < 20_000 and answer.status_code == 413
        assert engine.stats["encoded"] == 0


def test_a_full_queue_answers_busy_and_a_slow_request_times_out(tiny_model, image16) -> None:
    with server(tiny_model, max_queue=1, timeout=0.5) as (url, engine):
        predictor = RemotePredictor(url, retries=0)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        gate = threading.Event()
        engine.submit(lambda: gate.wait(30))  # running: holds the model thread
        while engine.queued:
            time.sleep(0.01)
        engine.submit(lambda: None)  # waiting: the queue is full
        answer = httpx.post(f"{url}/v1/vocabularies", json={"classes": ["a"]})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        with pytest.raises(RemoteError, match="busy"):
            predictor.predict(boxes=[40, 30, 80, 60])
        gate.set()
        while engine.queued:
            time.sleep(0.01)
        gate.clear()
        engine.submit(lambda: gate.wait(30))
        started = time.monotonic()
        answer = httpx.post(f"{url}/v1/vocabularies", json={"classes": ["b"]})
        assert answer.status_code == 504 and time.monotonic() - started < 5
        gate.set()
        assert predictor.predict(boxes=[40, 30, 80, 60]).masks.shape[0] == 1  # still serving


def test_a_client_that_disconnects_mid_upload_does_not_stop_the_server(served, remote, image16) -> None:
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /v1/images HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/x-npy\r\nContent-Length: 1000000\r\n\r\n".encode()
            + b"\x93NUMPY"
        )
    remote.set_image(image16)
    assert remote.predict(boxes=[40, 30, 80, 60]).masks.shape[0] == 1


# ------------------------------------------------------------------------------------------ wire


def test_mask_runs_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in ((3, 7, 5), (1, 1, 1), (2, 0, 4), (1, 30, 40)):
        mask = rng.random(shape) > 0.6
        np.testing.assert_array_equal(runs_mask(mask_runs(mask), shape), mask)
    assert mask_runs(np.ones((1, 2, 2), bool)) == [0, 4]


def test_the_openapi_schema_documents_the_endpoints(served) -> None:
    paths = httpx.get(f"{served[0]}/openapi.json").json()["paths"]
    documented = {
        "/v1/health",
        "/v1/models",
        "/v1/images",
        "/v1/images/{key}",
        "/v1/vocabularies",
        "/v1/examples",
    }
    documented |= {f"/v1/images/{{key}}/{action}" for action in ("predict", "annotate", "name-labels")}
    assert documented <= set(paths)


def test_examples_taught_through_the_server_name_objects_as_local_ones_do(remote, local, image16) -> None:
    local.set_image(image16)
    remote.set_image(image16)
    masks = np.zeros((2, *image16.shape), bool)
    masks[0, 30:60, 40:80], masks[1, 5:20, 5:25] = True, True
    features = local.example_features(masks)
    np.testing.assert_allclose(remote.example_features(masks), features, atol=1e-5)
    for predictor in (local, remote):
        predictor.add_examples(features, ["nucleus", "speckle"])
    assert remote.class_names == local.class_names == ["nucleus", "rod", "ring", "speckle"]
    boxes = [[40, 30, 80, 60], [5, 5, 25, 20]]
    got, expected = remote.predict(boxes=boxes), local.predict(boxes=boxes)
    same(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got.unknown, expected.unknown)
    with pytest.raises(ValueError, match="model"):
        remote.set_examples(
            type(remote.examples)(features, ["a", "b"], "another-model", remote.examples.layout)
        )
    assert remote.forget_examples() == 2 and remote.predict(boxes=boxes).unknown is None


def test_examples_and_vocabulary_travel_again_to_a_server_that_lacks_them(tiny_model, local, image16) -> None:
    """After a restart (or on another replica) a request carries the vocabulary and the examples themselves."""
    port = free_port()
    local.set_image(image16)
    masks = np.zeros((1, *image16.shape), bool)
    masks[0, 30:60, 40:80] = True
    local.add_examples(local.example_features(masks), ["speckle"])
    boxes = [[40, 30, 80, 60], [5, 5, 25, 20]]
    expected = local.predict(boxes=boxes)
    with server(tiny_model, port=port) as (url, _):
        predictor = RemotePredictor(url, backoff=0.05)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        predictor.set_examples(local.examples)
        same(predictor.predict(boxes=boxes), expected, atol=1e-5)
    with server(tiny_model, port=port) as (url, engine):
        got = predictor.predict(boxes=boxes)
        same(got, expected, atol=1e-5)
        np.testing.assert_array_equal(got.unknown, expected.unknown)
        assert len(engine.vocabularies) == 1 and len(engine.example_sets) == 1
        answer = httpx.post(
            f"{url}/v1/images/{predictor.image_id}/predict",
            json={
                "vocabulary": "0" * 32,
                "boxes": [1, 2, 3, 4],
                "vocabulary_classes": {"classes": ["a", "b"]},
            },
        )
        assert answer.status_code == 422 and "not the vocabulary of that id" in answer.json()["message"]


def test_a_large_image_is_tiled_on_the_server_as_it_is_here(remote, local) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 3000, size=(300, 420), dtype=np.uint16)  # over 1.5 model inputs: tiled
    image[100:160, 200:280] += 30000
    local.set_image(image)
    remote.set_image(image)
    assert local.tiles is not None and remote.image_tiled
    boxes = [[200, 100, 280, 160], [10, 10, 60, 50]]
    got, expected = remote.predict(boxes=boxes), local.predict(boxes=boxes)
    assert type(got.masks).__name__ == "CompactMasks"
    same(got, expected)
    np.testing.assert_array_equal(got.tiles, expected.tiles)


def test_a_prompt_to_a_stalled_server_fails_within_the_prompt_timeout(tiny_model, image16) -> None:
    with server(tiny_model) as (url, engine):
        predictor = RemotePredictor(url, prompt_timeout=0.5)
        predictor.set_vocabulary(CLASSES)
        predictor.set_image(image16)
        gate = threading.Event()
        engine.submit(lambda: gate.wait(30))  # the model thread is stuck
        started = time.monotonic()
        with pytest.raises(RemoteError, match="did not answer within 0.5 s"):
            predictor.predict(boxes=[40, 30, 80, 60])
        assert time.monotonic() - started < 5
        gate.set()
        assert predictor.predict(boxes=[40, 30, 80, 60]).masks.shape[0] == 1


def test_encoded_images_are_kept_within_the_memory_budget(tiny_model, local, image16) -> None:
    with server(tiny_model, memory_bytes=1) as (url, engine):  # room for the last image only
        predictor = RemotePredictor(url)
        predictor.set_vocabulary(CLASSES)
        images = [image16 + i for i in range(3)]
        states = []
        for image in images:
            predictor.set_image(image)
            states.append(predictor.get_image_embedding())
        assert list(engine.images) == [predictor.image_id]
        predictor.set_image_embedding(states[0])  # evicted on the server: sent and encoded again
        local.set_image(images[0])
        same(predictor.predict(boxes=[40, 30, 80, 60]), local.predict(boxes=[40, 30, 80, 60]))
        assert engine.stats["encoded"] == 4 and len(engine.images) == 1


def test_clients_with_other_vocabularies_and_examples_each_get_their_own_names(served, tiny_model) -> None:
    url, _ = served
    rng = np.random.default_rng(5)
    whole = rng.integers(0, 3000, size=(90, 150), dtype=np.uint16)
    tiled = rng.integers(0, 3000, size=(300, 420), dtype=np.uint16)
    vocabularies = [CLASSES, ["cell", "blob, spot"]]
    pairs = []
    for k, vocabulary in enumerate(vocabularies):
        mine, theirs = OVSAMPredictor(tiny_model), RemotePredictor(url, token=TOKEN)
        for p in (mine, theirs):
            p.set_vocabulary(vocabulary)
        if k == 1:  # the second client has examples too
            mine.set_image(whole)
            masks = np.zeros((1, *whole.shape), bool)
            masks[0, 10:40, 20:60] = True
            mine.add_examples(mine.example_features(masks), ["speck"])
            theirs.set_examples(mine.examples)
        pairs.append((mine, theirs))
    for _ in range(2):  # alternating: the server switches image, vocabulary and examples every request
        for image in (whole, tiled):
            for mine, theirs in pairs:
                mine.set_image(image)
                theirs.set_image(image)
                same(theirs.predict(boxes=[20, 10, 60, 40]), mine.predict(boxes=[20, 10, 60, 40]), atol=1e-5)
