"""1,000 prompts on one image on the CPU: peak memory stays below 4 GiB thanks to chunked decoding.

Runs the model in a child process and reads its peak resident memory (ru_maxrss) at three points: after
building the model, after encoding the image, after predicting 1,000 box prompts (masks at the original
1024x768 size, returned as bool). Also decodes the same prompts with chunking switched off (one chunk of
1,000) for comparison, in a second child process.

    python benchmarks/bench_many_prompts_memory.py [--model ovsam_rn50x16] [--prompts 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from ovsam_model.predictor import DEFAULT_CHUNK_SIZE

GIB = 1024**3


def child(model_name: str, prompts: int, chunk: int) -> None:
    import numpy as np
    import torch

    from common import random_ovsam
    from ovsam_model.predictor import OVSAMPredictor

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux

    def phase_peak() -> int:
        """Peak resident bytes since the last reset_peak() (Linux VmHWM), else the process peak."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return peak()

    def reset_peak() -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        except OSError:
            pass

    model = random_ovsam(model_name)
    after_model = peak()
    predictor = OVSAMPredictor(model, chunk_size=chunk)
    text = torch.nn.functional.normalize(torch.randn(80, 2, model.config.embed_dim), dim=-1)
    predictor.set_vocabulary([f"class {i}" for i in range(80)], text_embeddings=text)
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 255, (768, 1024), dtype=np.uint8))
    after_image = peak()
    reset_peak()
    x0, y0 = rng.uniform(0, 900, prompts), rng.uniform(0, 650, prompts)
    boxes = np.stack([x0, y0, x0 + rng.uniform(10, 120, prompts), y0 + rng.uniform(10, 110, prompts)], 1)
    result = predictor.predict(boxes=boxes)
    assert result.masks.shape == (prompts, 1, 768, 1024)
    print(
        json.dumps(
            {
                "after_model": after_model,
                "after_image": after_image,
                "after_predict": peak(),
                "predict_phase_peak": phase_peak(),
                "masks_bytes": int(result.masks.nbytes),
            }
        )
    )


def run_child(model: str, prompts: int, chunk: int) -> dict[str, int] | None:
    """The child's measurements, or None when it was killed (out of memory)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--model",
            model,
            "--prompts",
            str(prompts),
            "--chunk",
            str(chunk),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        print(
            f"  (chunk {chunk}: the child process failed with code {out.returncode}: {out.stderr[-300:]!r})"
        )
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ovsam_rn50x16", help="OV-SAM config (random weights)")
    p.add_argument("--prompts", type=int, default=1000, help="box prompts on one image")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK_SIZE["cpu"], help="prompts per decoder chunk")
    p.add_argument(
        "--unchunked-prompts",
        type=int,
        default=200,
        help="prompts decoded as ONE chunk for comparison (1,000 in one chunk exhausts 24 GiB)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.model, args.prompts, args.chunk)
        return {}
    n_whole = args.unchunked_prompts
    chunked = run_child(args.model, args.prompts, args.chunk)
    whole = run_child(args.model, n_whole, n_whole)
    if chunked is None:
        raise SystemExit("the chunked run failed")
    print(f"box prompts on a 1024x768 image, {args.model}, CPU, peak resident memory of the process")
    rows = [
        (f"{args.prompts} prompts, chunks of {args.chunk}", chunked),
        (f"{n_whole} prompts, one chunk", whole),
    ]
    for name, m in rows:
        if m is None:
            continue
        print(
            f"  {name:>26}: peak after building the model {m['after_model'] / GIB:5.2f} GiB, while encoding the"
            f" image {m['after_image'] / GIB:5.2f} GiB, while decoding the prompts {m['predict_phase_peak'] / GIB:5.2f}"
            f" GiB (the returned bool masks are {m['masks_bytes'] / GIB:4.2f} GiB)"
        )
    decode_peak = chunked["predict_phase_peak"] / GIB
    print(
        f"  peak while decoding {args.prompts} prompts with chunking: {decode_peak:.2f} GiB "
        f"(target < 4 GiB: {'met' if decode_peak < 4 else 'NOT met'}); the process peak, set by the image "
        f"encoder, is {chunked['after_image'] / GIB:.2f} GiB"
    )
    out = {"decode_peak_gib": decode_peak, "encode_peak_gib": chunked["after_image"] / GIB}
    if whole is not None:
        per_chunked = (chunked["predict_phase_peak"] - chunked["after_model"]) / args.prompts
        per_whole = (whole["predict_phase_peak"] - whole["after_model"]) / n_whole
        print(
            f"  decoding memory per prompt above the model, one chunk / chunked: {per_whole / per_chunked:.1f}x"
        )
        out["per_prompt_ratio"] = per_whole / per_chunked
    return out


if __name__ == "__main__":
    main()
