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

GIB = 1024**3


def child(model_name: str, prompts: int, chunk: int) -> None:
    import numpy as np
    import torch

    from common import random_ovsam
    from ovsam_model.predictor import OVSAMPredictor

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux

    model = random_ovsam(model_name)
    after_model = peak()
    predictor = OVSAMPredictor(model, chunk_size=chunk)
    text = torch.nn.functional.normalize(torch.randn(80, 2, model.config.embed_dim), dim=-1)
    predictor.set_vocabulary([f"class {i}" for i in range(80)], text_embeddings=text)
    rng = np.random.default_rng(0)
    predictor.set_image(rng.integers(0, 255, (768, 1024), dtype=np.uint8))
    after_image = peak()
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
                "masks_bytes": int(result.masks.nbytes),
            }
        )
    )


def run_child(model: str, prompts: int, chunk: int) -> dict[str, int]:
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
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ovsam_rn50x16", help="OV-SAM config (random weights)")
    p.add_argument("--prompts", type=int, default=1000, help="box prompts on one image")
    p.add_argument("--chunk", type=int, default=64, help="prompts per decoder chunk")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.model, args.prompts, args.chunk)
        return {}
    chunked = run_child(args.model, args.prompts, args.chunk)
    whole = run_child(args.model, args.prompts, args.prompts)
    print(f"{args.prompts} box prompts on a 1024x768 image, {args.model}, CPU (peak resident memory)")
    for name, m in (("chunked", chunked), ("one chunk", whole)):
        decode = m["after_predict"] - m["after_image"]
        print(
            f"  {name:>9}: model {m['after_model'] / GIB:5.2f} GiB, +image {m['after_image'] / GIB:5.2f} GiB, "
            f"+{args.prompts} prompts {m['after_predict'] / GIB:5.2f} GiB "
            f"(decoding added {decode / GIB:5.2f} GiB; the returned masks are {m['masks_bytes'] / GIB:4.2f} GiB)"
        )
    peak = chunked["after_predict"] / GIB
    print(f"  peak with chunking: {peak:.2f} GiB (target < 4 GiB: {'met' if peak < 4 else 'NOT met'})")
    print(f"  ratio peak chunked / one chunk: {chunked['after_predict'] / whole['after_predict']:.2f}")
    return {"peak_gib": peak, "peak_unchunked_gib": whole["after_predict"] / GIB}


if __name__ == "__main__":
    main()
