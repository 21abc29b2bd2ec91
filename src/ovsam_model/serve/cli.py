"""``python -m ovsam_model.serve``: serve one OV-SAM model over HTTP to many napari sessions.

::

    python -m ovsam_model.serve --model ovsam_rn50x16 --device cuda --host 127.0.0.1 --port 8765 \\
        [--token-file F] [--cache DIR] [--memory-gb 8] [--replicas N]

It binds to localhost unless told otherwise; any other address needs a token (``--token-file`` or the
``OVSAM_TOKEN`` environment variable), and TLS comes from a reverse proxy in front (README). ``--replicas N``
runs N copies on a Ray cluster behind Ray Serve's proxy (``ovsam_model.serve.ray_app``), one per GPU.
Exit status: 0 stopped, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli_parser import OneLineErrorParser, fail
from . import DEFAULT_PORT, TOKEN_ENV, is_loopback
from .app import MiB, ServerSettings
from .config import ServeConfig, build_engine
from .engine import DEFAULT_MEMORY_BYTES, DEFAULT_QUEUE

PROG = "python -m ovsam_model.serve"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG, description="Serve an OV-SAM model to napari over HTTP.")
    parser.add_argument(
        "--model", default="demo", help="a model name (e.g. ovsam_rn50x16, demo) or a checkpoint"
    )
    parser.add_argument("--device", default="auto", help="cuda, cuda:1, mps, cpu or auto (default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--token-file", default=None, help=f"file holding the bearer token (or set {TOKEN_ENV})"
    )
    parser.add_argument(
        "--cache", default=None, help="embedding-cache folder (the plugin's format; shareable)"
    )
    parser.add_argument("--memory-gb", type=float, default=DEFAULT_MEMORY_BYTES / 1024**3,
                        help="encoded images kept in memory, in GiB (default 4)")  # fmt: skip
    parser.add_argument(
        "--max-queue", type=int, default=DEFAULT_QUEUE, help="requests waiting before 503 busy"
    )
    parser.add_argument("--max-body-mb", type=float, default=512, help="largest request body, in MiB")
    parser.add_argument(
        "--max-image-mpix", type=float, default=2**27 / 1e6, help="largest image, in megapixels"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds a request may take before 504")
    parser.add_argument(
        "--tiling", choices=("auto", "off"), default="auto", help="tile large images (default)"
    )
    parser.add_argument("--replicas", type=int, default=0,
                        help="run N replicas on a Ray cluster with Ray Serve (0: this process alone)")  # fmt: skip
    return parser


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> ServeConfig:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ) if environ is None else environ
    for name, value, low in (
        ("--port", args.port, 0),
        ("--max-queue", args.max_queue, 1),
        ("--replicas", args.replicas, 0),
    ):
        if value < low:
            fail(PROG, f"{name} must be >= {low}, got {value}.")
    if args.port > 65535:
        fail(PROG, f"--port must be <= 65535, got {args.port}.")
    for name, value in (("--memory-gb", args.memory_gb), ("--max-body-mb", args.max_body_mb),
                        ("--max-image-mpix", args.max_image_mpix), ("--timeout", args.timeout)):  # fmt: skip
        if not value > 0:
            fail(PROG, f"{name} must be > 0, got {value}.")
    token = read_token(args.token_file, environ)
    if token is None and not is_loopback(args.host):
        fail(
            PROG,
            f"--host {args.host} lets other machines connect: give a token (--token-file FILE, or set "
            f"{TOKEN_ENV}) so that only your clients can use the model, or bind to 127.0.0.1.",
        )
    settings = ServerSettings(
        token=token,
        max_body_bytes=int(args.max_body_mb * MiB),
        max_image_pixels=int(args.max_image_mpix * 1e6),
        timeout=float(args.timeout),
    )
    return ServeConfig(
        model=args.model, device=args.device, host=args.host, port=args.port, cache=args.cache,
        memory_bytes=int(args.memory_gb * 1024**3), max_queue=args.max_queue, replicas=args.replicas,
        tiling=args.tiling, settings=settings,
    )  # fmt: skip


def read_token(path: str | None, environ: dict[str, str]) -> str | None:
    """The token from ``path`` (its first line) or ``OVSAM_TOKEN``; None when neither is given."""
    if path is not None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip().splitlines()
        except OSError as error:
            fail(PROG, f"cannot read the token file {path}: {error.strerror or error}.")
        if not token or not token[0].strip():
            fail(PROG, f"the token file {path} is empty: write the token on its first line.")
        return token[0].strip()
    value = environ.get(TOKEN_ENV, "").strip()
    return value or None


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if config.replicas:
        from .ray_app import serve_with_ray

        return serve_with_ray(config)
    import uvicorn

    from .app import create_app

    try:
        engine = build_engine(config)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        fail(PROG, f"cannot load the model '{config.model}': {error}")
    app = create_app(engine, config.settings)
    where = f"http://{config.host}:{config.port}"
    access = "token required" if config.settings.token else "no token: localhost only"
    print(
        f"Serving {engine.model.config.name} on {engine.predictor.device} at {where} ({access}).",
        file=sys.stderr,
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5)
    engine.close()
    return 0
