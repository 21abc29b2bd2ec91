"""The OV-SAM server over loopback: prompt round trip against the local predictor, uploading a slice, and many
concurrent clients (throughput, tail latency, every answer checked).

The server runs as ``python -m ovsam_model.serve`` in its own process (one torch thread); the clients are this
process (latency, upload) and client processes (concurrency). The ``tiny`` model is served from a checkpoint
written here, so server and local predictor hold the same weights; ``demo`` is the shipped model.

    python bench_serve.py [--models tiny demo] [--clients 8] [--prompts 50]
    python bench_serve.py --models ovsam_rn50x16 --device cuda      # on a GPU machine (random weights)

Targets (benchmarks/README.md): a box prompt <= 1.5x the local predictor + 5 ms; a 1024x1024 uint16 upload
<= 50 ms; 8 clients x 50 prompts all answered correctly with a total throughput at least one client's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, random_ovsam

CLASSES = ["nucleus", "rod", "ring", "cluster"]


def start_server(model: str, port: int, device: str = "cpu") -> subprocess.Popen:
    from ovsam_model.serve.local import start_server_process

    return start_server_process(["--model", model, "--device", device], port)


def boxes_for(n: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(1)
    h, w = size
    x0, y0 = rng.uniform(0, w * 0.7, n), rng.uniform(0, h * 0.7, n)
    return np.stack([x0, y0, x0 + rng.uniform(20, w * 0.3, n), y0 + rng.uniform(20, h * 0.3, n)], 1).round()


def client_run(url: str, image: np.ndarray, boxes: np.ndarray, start, queue, nice: int) -> None:
    """A client process: its own RemotePredictor, all prompts after the shared start signal. nice: its
    scheduling priority below the server's (clients on other machines do not take the server's cores)."""
    torch.set_num_threads(1)
    os.nice(nice)
    from ovsam_model.remote import RemotePredictor

    predictor = RemotePredictor(url)
    predictor.set_vocabulary(CLASSES)
    predictor.set_image(image)
    start.wait()
    latencies, answers = [], []
    began = time.perf_counter()
    for box in boxes:
        t0 = time.perf_counter()
        result = predictor.predict(boxes=box)
        latencies.append(time.perf_counter() - t0)
        answers.append((np.packbits(np.asarray(result.masks)).tobytes(), tuple(result.class_names)))
    queue.put((began, time.perf_counter(), latencies, answers))


def concurrent(
    url: str, image: np.ndarray, boxes: np.ndarray, clients: int, nice: int = 0
) -> tuple[float, list[float], list]:
    """Run ``clients`` processes with their share of ``boxes`` each (all of them for each); returns the wall time
    from the first start to the last end, every latency, and each client's answers."""
    context = mp.get_context("spawn")
    start, queue = context.Event(), context.Queue()
    procs = [
        context.Process(target=client_run, args=(url, image, boxes, start, queue, nice))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    time.sleep(3.0 + clients)  # let every client connect and upload (the image is known after the first)
    start.set()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return wall, [x for r in results for x in r[2]], [r[3] for r in results]


def bench_model(name: str, served: str, local_model, args, port: int) -> None:
    from ovsam_model.predictor import OVSAMPredictor
    from ovsam_model.remote import RemotePredictor

    size = local_model.config.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (size, size), dtype=np.uint16)
    image[size // 4 : size // 2, size // 4 : size // 2] += 20000
    boxes = boxes_for(args.prompts, image.shape)
    server = start_server(served, port, args.device)
    try:
        url = f"http://127.0.0.1:{port}"
        local = OVSAMPredictor(local_model)
        local.set_vocabulary(CLASSES)
        local.set_image(image)
        remote = RemotePredictor(url)
        remote.set_vocabulary(CLASSES)
        remote.set_image(image)
        for box in boxes[:5]:  # warm both
            local.predict(boxes=box)
            remote.predict(boxes=box)
        times: dict[str, list[float]] = {"local": [], "remote": []}
        server_times = []
        for box in boxes:  # alternating, so load changes hit both alike
            for kind, predictor in (("local", local), ("remote", remote)):
                t0 = time.perf_counter()
                result = predictor.predict(boxes=box)
                times[kind].append(time.perf_counter() - t0)
            server_times.append(remote.last_timing.server)
            expected = local.predict(boxes=box)
            assert np.array_equal(np.asarray(result.masks), np.asarray(expected.masks)), "remote masks differ"
            assert result.class_names == expected.class_names, "remote names differ"
        loc, rem = statistics.median(times["local"]), statistics.median(times["remote"])
        bound = 1.5 * loc + 0.005
        print(f"\n## {name} ({size} px input), {len(boxes)} box prompts, medians")
        print(f"local predictor          {loc * 1000:8.2f} ms")
        print(
            f"RemotePredictor loopback {rem * 1000:8.2f} ms  (server {statistics.median(server_times) * 1000:.2f} ms)"
        )
        print(f"remote / local           {rem / loc:8.2f}x   target <= 1.5x + 5 ms = {bound * 1000:.2f} ms: "
              f"{'met' if rem <= bound else 'NOT met'}")  # fmt: skip

        big = rng.integers(0, 65535, (1024, 1024), dtype=np.uint16)
        for compress in (True, False):
            uploader = RemotePredictor(url, compress=compress)
            rounds = []
            for i in range(5):
                fresh = big.copy()
                fresh[0, 0] = i + 2 * compress  # a new content hash each round: really uploaded and encoded
                t0 = time.perf_counter()
                uploader.set_image(fresh)
                total = time.perf_counter() - t0
                rounds.append(total - uploader.last_timing.compute)  # all but the encoding
            upload = statistics.median(rounds)
            if compress:  # what a client sends to a server on another machine (not the loopback default)
                print(f"upload 1024x1024 uint16 (zlib, the default off this machine) {upload * 1000:7.1f} ms "
                      "without the server's encoding")  # fmt: skip
            else:
                print(f"upload 1024x1024 uint16 (raw, the loopback default) {upload * 1000:7.1f} ms without the "
                      f"server's encoding   target <= 50 ms: {'met' if upload <= 0.05 else 'NOT met'}")  # fmt: skip

        for nice in (0, 10):
            where = "sharing the cores" if nice == 0 else "niced (standing in for other machines)"
            before = RemotePredictor(url).connect()["stats"]
            one_wall, one_lat, one_answers = concurrent(url, image, boxes, 1, nice)
            wall, lat, answers = concurrent(url, image, boxes, args.clients, nice)
            after = RemotePredictor(url).connect()["stats"]
            wrong = sum(a != one_answers[0] for a in answers)
            one_rate, rate = len(boxes) / one_wall, args.clients * len(boxes) / wall
            p50, p95, p99 = np.percentile(lat, [50, 95, 99]) * 1000
            merged = after["merged_prompts"] - before["merged_prompts"]
            print(f"clients {where}:")
            one_median = statistics.median(one_lat) * 1000
            print(f"  1 client x {len(boxes)}: {one_rate:7.1f} prompts/s, median {one_median:.1f} ms")
            right = f"{args.clients - wrong} of {args.clients} clients got every answer right"
            print(f"  {args.clients} clients x {len(boxes)}: {rate:7.1f} prompts/s ({rate / one_rate:.2f}x one "
                  f"client), latency p50 {p50:.1f} / p95 {p95:.1f} / p99 {p99:.1f} ms; {merged} prompts "
                  f"decoded in merged calls; {right}")  # fmt: skip
            print(
                f"  throughput target >= 1.0x one client: {'met' if rate >= one_rate and not wrong else 'NOT met'}"
            )
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "demo"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument(
        "--device", default="cpu", help="cpu, or cuda on a GPU machine (local and server alike)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ovsam_model.build import build_ovsam
    from ovsam_model.checkpoint.own import save_checkpoint

    print(
        f"# OV-SAM server over loopback ({machine(args.device)}); server: its own process, one torch thread"
    )
    with tempfile.TemporaryDirectory() as folder:
        for i, name in enumerate(args.models):
            torch.manual_seed(0)
            # demo: the shipped weights; any other model with random weights (the cost does not depend on
            # them), served from a checkpoint of these very weights
            model = build_ovsam(name, device="cpu") if name == "demo" else random_ovsam(name)
            served = name
            if name != "demo":
                served = str(save_checkpoint(model, Path(folder) / f"{name}.safetensors"))
            model = build_ovsam(served, device=args.device)
            bench_model(name, served, model, args, args.port + i)


if __name__ == "__main__":
    main()
