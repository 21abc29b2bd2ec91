"""Image encoding cost: OV-SAM RN50x16 (CLIP trunk + SAM2CLIP adapter + CLIP2SAM FPN) vs SAM ViT-H's image
encoder, both at 1024x1024. Target: time ratio <= 0.45 (the paper counts 1,180 vs 3,001 GMACs). GMACs are
counted with torch.utils.flop_counter (FLOPs / 2).

    python benchmarks/bench_image_encoder.py [--rounds 3]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import interleaved, machine, random_ovsam, random_sam, synced


def gmacs(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2e9


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ovsam_rn50x16", help="OV-SAM config (random weights)")
    p.add_argument("--rounds", type=int, default=2, help="timed repetitions per side")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_ovsam(args.model).to(args.device)
    sam = random_sam("vit_h").to(args.device)
    image = torch.rand(1, 3, 1024, 1024, device=args.device) * 255
    sam_input = sam.preprocess(image.clone())

    @torch.no_grad()
    def ovsam_encode() -> None:
        model.encode_image(image)

    @torch.no_grad()
    def sam_encode() -> None:
        sam.image_encoder(sam_input)

    macs = {"ovsam": gmacs(ovsam_encode), "sam": gmacs(sam_encode)}
    # the FLOP-counting passes above were the warm-up
    fns = {"ovsam": synced(ovsam_encode, args.device), "sam": synced(sam_encode, args.device)}
    times = interleaved(fns, rounds=args.rounds, warmup=0 if args.device == "cpu" else 2)
    ratio = times["ovsam"] / times["sam"]
    print(f"machine: {machine(args.device)}")
    print(f"image encoding at 1024x1024, {args.device}")
    print(
        f"  OV-SAM {args.model} (trunk + adapter + FPN): {times['ovsam']:7.2f} s  {macs['ovsam']:8.0f} GMACs"
    )
    print(f"  SAM ViT-H image encoder                 : {times['sam']:7.2f} s  {macs['sam']:8.0f} GMACs")
    print(
        f"  time ratio OV-SAM / SAM : {ratio:.3f}  (target <= 0.45: {'met' if ratio <= 0.45 else 'NOT met'})"
    )
    print(f"  GMAC ratio OV-SAM / SAM : {macs['ovsam'] / macs['sam']:.3f}")
    return {
        "ovsam_s": times["ovsam"],
        "sam_s": times["sam"],
        "ratio": ratio,
        "ovsam_gmacs": macs["ovsam"],
        "sam_gmacs": macs["sam"],
    }


if __name__ == "__main__":
    main()
