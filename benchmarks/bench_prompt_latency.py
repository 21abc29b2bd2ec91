"""Per-prompt latency on a cached image embedding: OV-SAM (prompt -> mask + class) vs segment_anything's own
prompt encoder + mask decoder (prompt -> mask) on the same 256x64x64 embedding. Target: ratio <= 1.3.

Both sides decode one box prompt at a time, as an interactive click does, and stop at the low-resolution mask
logits (the upsampling to the image size is the same work for both). OV-SAM's side adds what naming costs:
the box of the predicted mask, RoIAlign on the FPN, the region head, the frozen-CLIP attention pool and the
fusion with a 80-class vocabulary.

    python benchmarks/bench_prompt_latency.py [--model ovsam_rn50x16] [--rounds 30]
"""

from __future__ import annotations

import argparse

import torch

from common import interleaved, machine, random_ovsam, random_sam, synced
from ovsam_model.prompts import PromptSet


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ovsam_rn50x16", help="OV-SAM config (random weights)")
    p.add_argument("--rounds", type=int, default=30, help="timed repetitions per side")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-cuda-graphs", action="store_true", help="OV-SAM decodes without CUDA graphs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ovsam_model.predictor import OVSAMPredictor

    model = random_ovsam(args.model).to(args.device)
    sam = random_sam("vit_h").to(args.device)
    size = model.config.image_size
    with torch.no_grad():
        features = model.encode_image(torch.rand(1, 3, size, size, device=args.device) * 255)
    predictor = OVSAMPredictor(model, cuda_graphs=not args.no_cuda_graphs)
    text = torch.nn.functional.normalize(torch.randn(80, 2, model.config.embed_dim), dim=-1)
    predictor.set_vocabulary([f"class {i}" for i in range(80)], text_embeddings=text)
    box = torch.tensor([[300.0, 200.0, 520.0, 480.0]], device=args.device)
    prompt = PromptSet(None, None, box)
    embedding = features.embedding
    image_pe = sam.prompt_encoder.get_dense_pe()

    @torch.no_grad()
    def ovsam_prompt() -> None:
        predictor.predict_torch(features, prompt)

    @torch.no_grad()
    def sam_prompt() -> None:
        sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
        sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    fns = {"ovsam": synced(ovsam_prompt, args.device), "sam": synced(sam_prompt, args.device)}
    times = interleaved(fns, rounds=args.rounds, warmup=3)
    ratio = times["ovsam"] / times["sam"]
    print(f"machine: {machine(args.device)}")
    print(
        f"per-prompt latency, {args.model} vs SAM ViT-H decoder, one box on a cached 1024 embedding, {args.device}"
    )
    print(f"  OV-SAM prompt -> mask + class : {1000 * times['ovsam']:8.2f} ms")
    print(f"  SAM    prompt -> mask         : {1000 * times['sam']:8.2f} ms")
    print(
        f"  ratio OV-SAM / SAM            : {ratio:8.2f}  (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})"
    )
    return {"ovsam_ms": 1000 * times["ovsam"], "sam_ms": 1000 * times["sam"], "ratio": ratio}


if __name__ == "__main__":
    main()
