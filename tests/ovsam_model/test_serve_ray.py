"""The Ray Serve deployment (``--replicas N``): two CPU replicas of the tiny model behind Ray's proxy answer
as the local predictor does, both take requests, share the cache folder, and keep the token and the body
limit (uploads stream through the proxy)."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "ray.serve", reason="the Ray Serve tests need the ray extra: pip install 'napari-ovsam[ray]'"
)

import httpx  # noqa: E402  (after the skip: the ray extra brings httpx)
import ray  # noqa: E402

from ovsam_model.checkpoint import save_checkpoint  # noqa: E402
from ovsam_model.embedding_cache import EmbeddingCache  # noqa: E402
from ovsam_model.predictor import OVSAMPredictor  # noqa: E402
from ovsam_model.remote import RemotePredictor  # noqa: E402
from ovsam_model.serve.cli import parse_args  # noqa: E402
from ovsam_model.serve.ray_app import (  # noqa: E402
    HEADROOM,
    REPLICA_HEADER,
    deployment_options,
    start_ray_serve,
    stop_ray_serve,
)
from ovsam_model.serve.wire import NPY  # noqa: E402

TOKEN = "ray-test-token"
CLASSES = ["nucleus", "rod, bacterium", "ring"]
MAX_BODY_MB = 2


class RecordingTransport(httpx.HTTPTransport):
    """An HTTP transport that notes which replica answered each request: (method, path, replica id)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.answers.append((request.method, request.url.path, response.headers.get(REPLICA_HEADER)))
        return response

    def replicas(self, suffix: str) -> set[str | None]:
        return {replica for _, path, replica in self.answers if path.endswith(suffix)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    url: str
    cache: Path


@pytest.fixture(scope="module")
def deployment(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two replicas of the tiny model (from a checkpoint: every replica loads the same weights) sharing one
    cache folder, on a local two-CPU Ray."""
    folder = tmp_path_factory.mktemp("ray-serve")
    checkpoint = save_checkpoint(tiny_model, folder / "tiny.safetensors")
    argv = ["--model", str(checkpoint), "--device", "cpu", "--port", str(_free_port()), "--replicas", "2",
            "--cache", str(folder / "cache"), "--max-body-mb", str(MAX_BODY_MB)]  # fmt: skip
    config = parse_args(argv, environ={"OVSAM_TOKEN": TOKEN})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        url = start_ray_serve(config)
        print(f"two replicas ready in {time.perf_counter() - started:.1f} s")
        yield Deployment(url, folder / "cache")
    finally:
        stop_ray_serve()
        ray.shutdown()


def _replica_stats(url: str) -> dict[str, dict[str, int]]:
    """Each replica's engine counters, by replica id (enough requests that both answer)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers = [httpx.get(f"{url}/v1/models", headers=auth) for _ in range(30)]
    return {r.headers[REPLICA_HEADER]: r.json()["stats"] for r in answers}


@pytest.mark.parametrize(
    ("device", "cluster_gpus", "replica_device", "gpus"),
    [("cpu", 4, "cpu", 0), ("cuda", 4, "cuda", 1), ("cuda:1", 4, "cuda", 1), ("auto", 4, "cuda", 1),
     ("auto", 0, "auto", 0), ("mps", 0, "mps", 0)],
)  # fmt: skip
def test_one_gpu_per_replica_and_room_for_the_engine_queue(
    device: str, cluster_gpus: int, replica_device: str, gpus: int
) -> None:
    config = parse_args(["--device", device, "--replicas", "3", "--max-queue", "10"], environ={})
    replica, options = deployment_options(config, cluster_gpus)
    assert replica.device == replica_device and replica.model == config.model
    assert options["num_replicas"] == 3 and options["ray_actor_options"]["num_gpus"] == gpus
    assert options["max_ongoing_requests"] == 10 + HEADROOM and options["max_queued_requests"] == 30


@pytest.mark.slow
@pytest.mark.distributed
def test_two_replicas_answer_as_the_local_predictor(
    deployment: Deployment, tiny_model, image16: np.ndarray
) -> None:
    transport = RecordingTransport()
    remote = RemotePredictor(deployment.url, token=TOKEN, transport=transport, retries=5)
    remote.set_image(image16)
    remote.set_vocabulary(CLASSES)  # held by one replica: a request reaching the other carries it after a 404
    boxes = [[40 + i, 30, 80 + 3 * i, 60 + i] for i in range(12)]
    answers = []
    for box in boxes:
        answers.append((remote.predict(boxes=box), transport.answers[-1][2]))
    assert len({replica for _, replica in answers}) == 2, f"one replica answered: {transport.answers}"

    # One replica encoded the image, the other read it from the shared folder (float16 there): each answers
    # as a local predictor holding the same embedding.
    stats = _replica_stats(deployment.url)
    assert set(stats) == {replica for _, replica in answers}
    encoder = next(replica for replica, counts in stats.items() if counts["encoded"] == 1)
    assert sorted((s["encoded"], s["from_disk"]) for s in stats.values()) == [(0, 1), (1, 0)], stats
    fresh, from_disk = OVSAMPredictor(tiny_model), OVSAMPredictor(tiny_model)
    fresh.set_image(image16)
    key = (str(remote.server_info["fingerprint"]), str(remote.image_id))
    stored = EmbeddingCache(store_path=deployment.cache).get(key)
    assert stored is not None
    from_disk.set_image_embedding(stored, image=image16)
    for local in (fresh, from_disk):
        local.set_vocabulary(CLASSES)
    for box, (got, replica) in zip(boxes, answers):
        want = (fresh if replica == encoder else from_disk).predict(boxes=np.asarray(box, float))
        assert np.array_equal(got.masks, want.masks), (box, replica)
        assert list(got.class_names) == list(want.class_names), (box, replica)
        np.testing.assert_allclose(got.iou, want.iou, rtol=1e-5, atol=1e-6)
    remote.close()


@pytest.mark.slow
@pytest.mark.distributed
def test_uploads_stream_through_the_proxy_with_the_token_and_body_limit(deployment: Deployment) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{deployment.url}/v1/models").status_code == 401
    image = np.random.default_rng(1).integers(0, 2**16, size=(700, 900), dtype=np.uint16)  # ~1.2 MiB
    remote = RemotePredictor(deployment.url, token=TOKEN, compress=False)
    remote.set_image(image)  # one body of many chunks, read by the replica through request.stream()
    assert remote.original_size == (700, 900)
    remote.close()

    too_large = np.zeros(MAX_BODY_MB * 2**20 // 2 + 1024, np.uint16)
    data = io.BytesIO()
    np.save(data, too_large)
    body = data.getvalue()
    sized = httpx.post(f"{deployment.url}/v1/images", content=body, headers={**auth, "Content-Type": NPY})
    assert sized.status_code == 413 and sized.json()["error"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the replica counts the bytes as they arrive
        for start in range(0, len(body), 2**16):
            yield body[start : start + 2**16]

    streamed = httpx.post(
        f"{deployment.url}/v1/images", content=chunks(), headers={**auth, "Content-Type": NPY}
    )
    assert streamed.status_code == 413 and streamed.json()["error"] == "too_large"
