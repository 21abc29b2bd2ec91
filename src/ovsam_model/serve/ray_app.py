"""``python -m ovsam_model.serve --replicas N``: N copies of the server on a Ray cluster, behind Ray Serve's
HTTP proxy (needs the ``ray`` extra: ``pip install 'napari-ovsam[ray]'``; docs/serving.md).

Each replica is a Ray actor that builds its own model and ``Engine`` once, in its constructor, and serves the
same FastAPI application as a single server (``serve.app.create_app``, same token and limits). With a CUDA
device every replica reserves one GPU (Ray sets ``CUDA_VISIBLE_DEVICES``, so the replica's device is
``cuda``); on the CPU it reserves none. The proxy listens on ``config.host:config.port`` on every node that
runs a replica. Every answer names its replica in the ``X-OVSAM-Replica`` header.

Replicas share nothing but the cache folder (``--cache``, on a file system every node mounts): an image one
replica encoded whole is read from there by the others instead of being encoded again. Vocabularies and tiled
images are held in a replica's memory only: a replica that lacks one answers 404 and the client sends it again.

Queueing: the proxy sends a replica at most ``max_queue`` + ``HEADROOM`` requests at a time (Ray's default of
5 would keep the engine from batching many clients' prompts), so a replica's own queue limit answers 503
busy first; beyond that each proxy holds at most ``max_queue`` requests per replica and answers 503 with
``Retry-After`` (Ray's backpressure), which ``RemotePredictor`` retries like the engine's.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from typing import Any

import ray
from fastapi import FastAPI, Request
from ray import serve
from ray.serve.config import BackpressureConfig, HTTPOptions

from ..cli_parser import fail
from .app import create_app
from .config import ServeConfig, build_engine

APP_NAME = "ovsam"
REPLICA_HEADER = "X-OVSAM-Replica"
HEADROOM = 8  # requests a replica takes beyond its engine queue: the running one, health checks, uploads
RETRY_AFTER_S = 1


@serve.ingress()
class OVSAMReplica:
    """One replica: its own model and engine (built once, here), serving ``create_app``'s application."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.engine = build_engine(config)
        self.replica_id = serve.get_replica_context().replica_tag

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.engine, self.config.settings)
        replica_id = self.replica_id

        @app.middleware("http")
        async def _name_replica(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica_id
            return response

        return app

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def connect_ray(**local_options: Any) -> bool:
    """Connect to the Ray cluster running here (``ray start --head``, or ``RAY_ADDRESS``), else start a local
    Ray with ``local_options`` (``ray.init`` keywords). Returns whether it started Ray itself."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address="auto")
        return False
    except ConnectionError:
        ray.init(**local_options)
        return True


def deployment_options(config: ServeConfig, cluster_gpus: float) -> tuple[ServeConfig, dict[str, Any]]:
    """The replicas' config (device as a replica sees it) and the Ray Serve deployment options.

    A CUDA device ("cuda", "cuda:1") and "auto" on a cluster with GPUs give each replica one GPU, seen by the
    replica as "cuda"; any other device reserves none.
    """
    device = config.device
    uses_gpu = device.startswith("cuda") or (device == "auto" and cluster_gpus >= 1)
    if uses_gpu:
        device = "cuda"
        if cluster_gpus < config.replicas:
            print(
                f"The Ray cluster has {cluster_gpus:g} GPUs and --replicas {config.replicas} needs one each: the "
                "replicas without a GPU wait until GPU nodes join (ray start --address ...).",
                file=sys.stderr,
            )
    options = {
        "name": "OVSAMServer",
        "num_replicas": config.replicas,
        "ray_actor_options": {"num_gpus": 1 if uses_gpu else 0},
        "max_ongoing_requests": config.max_queue + HEADROOM,
        "max_queued_requests": config.max_queue * config.replicas,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S),
    }
    return dataclasses.replace(config, device=device), options


def start_ray_serve(config: ServeConfig, **local_options: Any) -> str:
    """Deploy ``config.replicas`` replicas with Ray Serve (connecting to or starting Ray, see ``connect_ray``)
    and return the URL of the proxy once every replica has loaded its model. The deployment keeps serving
    until ``stop_ray_serve``."""
    connect_ray(**local_options)
    serve.start(http_options=HTTPOptions(host=config.host, port=config.port))
    replica_config, options = deployment_options(config, float(ray.cluster_resources().get("GPU", 0)))
    application = serve.deployment(**options)(OVSAMReplica).bind(replica_config)
    serve.run(application, name=APP_NAME, route_prefix="/")
    return f"http://{config.host}:{config.port}"


def stop_ray_serve(*, shutdown_serve: bool = True) -> None:
    """Remove the deployment; ``shutdown_serve``: stop Ray Serve too (its proxy and controller)."""
    if shutdown_serve:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)


def serve_with_ray(config: ServeConfig) -> int:
    """``--replicas N``: deploy, serve until Ctrl-C or SIGTERM, then remove the deployment (and stop Ray when
    it was started here). Returns the exit status."""
    started_ray = connect_ray()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        try:
            url = start_ray_serve(config)
        except RuntimeError as error:  # a replica could not start: its traceback is in Ray's log above
            fail(
                f"python -m {__package__}",
                f"cannot start the replicas of '{config.model}': {error} The replicas' errors are printed "
                "above and kept in Ray's logs (/tmp/ray/session_latest/logs/serve/).",
            )
        access = "token required" if config.settings.token else "no token: localhost only"
        print(
            f"Serving {config.model} with {config.replicas} replicas (Ray Serve) at {url} ({access}).",
            file=sys.stderr,
        )
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop_ray_serve(shutdown_serve=started_ray)
        ray.shutdown()
    return 0
