"""Naming classes from a few examples: the ``demo`` model on synthetic classes it never saw, CPU.

Example images: ``generate_image(..., extra_classes=True)`` of one seed and split (default seed 0, "train");
held-out images: another seed and split (default 11, "val"), which no example comes from. Both mix the four
known classes (nucleus, rod, ring, cluster) with the three new ones (crescent, dumbbell, speckled).

Examples are what a user has: every object of the example images is prompted (its ground-truth box, or one
click at its interior point: ``evaluation.gt_prompts``), and the mask the model PREDICTS from that prompt is
the example (``predictor.example_features``), not the true mask. For n = 1, 3, 5, 10, 20 examples per class
(all seven classes get examples), drawn at random from those objects (``--repeats`` draws, mean reported), the
predictor learns them (``add_examples``) and names every object of the held-out images from the same kind of
prompt (each image decoded once; each taught predictor names those masks with ``fuse_examples``, the step its
``predict`` adds to the text-only one). Printed: the share named right among new-class and among known-class
objects, and the text-only demo (no examples) on the known ones; at 10 per class (box prompts), the same draws
fused with other text weights (``--text-weights``: the trade-off between new and known classes). Targets (box
prompts): 10 per class, new >= 78 % and known >= 93 %; 5 per class, new >= 65 %.

Costs, side by side in one run: fitting the exemplar classifier on 200 examples (what the first ``predict``
after a change of examples does before naming: ``ExemplarNaming.classifier``; target < 1 s) and naming latency per
box prompt, one prompt at a time, with 10 examples per class vs without examples, same prompts, interleaved
(target <= 1.2x).

    python benchmarks/bench_exemplars.py [--quick] [--example-images 40] [--eval-images 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time

import numpy as np
import torch

from common import interleaved, machine, random_ovsam
from ovsam_model import OVSAMPredictor, build_ovsam
from ovsam_model.data.synthetic import (
    ALL_CLASS_NAMES,
    CLASS_NAMES,
    EXTRA_CLASS_NAMES,
    generate_image,
    image_rng,
)
from ovsam_model.evaluation.gt_prompts import gt_prompts, mask_ious
from ovsam_model.exemplars import FusionSettings
from ovsam_model.exemplars.learning import ExemplarNaming

KINDS = {"box": "box", "click": "point"}  # printed name -> gt_prompts kind
TARGETS = (("box", 10, "new", 78.0), ("box", 10, "known", 93.0), ("box", 5, "new", 65.0))
FIT_EXAMPLES, FIT_TARGET_S, LATENCY_TARGET, LATENCY_SHOTS = 200, 1.0, 1.2, 10
SWEEP_SHOTS = 10  # examples per class of the text-weight sweep


def images(seed: int, split: str, count: int, size: int) -> list:
    return [generate_image(image_rng(seed, split, i), size, extra_classes=True) for i in range(count)]


def prompt_args(masks: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """``predict`` keywords: each object's ground-truth box, or one click at its interior point."""
    return gt_prompts(masks, KINDS[kind])


def example_pool(predictor: OVSAMPredictor, samples: list, kind: str) -> dict[str, np.ndarray]:
    """Features of the masks predicted from every object's prompt: features (N, F), labels (N,), IoU (N,)."""
    features, labels, ious = [], [], []
    for sample in samples:
        if len(sample.masks) == 0:
            continue
        predictor.set_image(sample.image)
        masks = predictor.predict(**prompt_args(sample.masks, kind)).masks[:, 0]
        kept = masks.reshape(len(masks), -1).any(axis=1)  # an empty prediction cannot be an example
        if kept.any():
            features.append(predictor.example_features(masks[kept]))
            labels.append(sample.labels[kept])
            ious.append(mask_ious(masks[kept], sample.masks[kept]))
    return {
        "features": np.concatenate(features),
        "labels": np.concatenate(labels),
        "iou": np.concatenate(ious),
    }


def draw(pool: dict[str, np.ndarray], shots: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``shots`` random pool entries of every class (without replacement)."""
    chosen = []
    for label in range(len(ALL_CLASS_NAMES)):
        members = np.flatnonzero(pool["labels"] == label)
        if len(members) < shots:
            raise SystemExit(
                f"Only {len(members)} example objects of class {ALL_CLASS_NAMES[label]} for {shots} per class: "
                "pass more --example-images or fewer --shots."
            )
        chosen.append(rng.choice(members, shots, replace=False))
    return np.concatenate(chosen)


def taught(
    base: OVSAMPredictor, pool: dict[str, np.ndarray], rows: np.ndarray, text_weight: float | None = None
) -> OVSAMPredictor:
    """A predictor on the same model that has learnt the pool's ``rows`` as examples (with another text
    weight of the fusion where given)."""
    predictor = copy.copy(base)
    predictor.set_examples(None)
    if text_weight is not None:
        predictor.exemplar_settings = dataclasses.replace(base.exemplar_settings, text_weight=text_weight)
    predictor.add_examples(pool["features"][rows], [ALL_CLASS_NAMES[i] for i in pool["labels"][rows]])
    return predictor


def evaluate(
    base: OVSAMPredictor, taught_predictors: dict[tuple, OVSAMPredictor], samples: list, kind: str
) -> dict[tuple, dict[str, np.ndarray]]:
    """Per predictor key (and ("text",) for the base): correct (n,), unknown (n,), new (n,), iou (n,).

    Each image's prompts are decoded once, by the base; every taught predictor then names those masks from the
    same text probabilities and its examples (``fuse_examples``: the step ``predict`` adds once it has
    examples), so the rows differ in their examples only."""
    out: dict[tuple, dict[str, list]] = {}
    k = len(CLASS_NAMES)
    for sample in samples:
        if len(sample.masks) == 0:
            continue
        base.set_image(sample.image)
        state = base.get_image_embedding()
        truth = np.array([ALL_CLASS_NAMES[i] for i in sample.labels])
        new = sample.labels >= len(CLASS_NAMES)
        decoded = base.predict(**prompt_args(sample.masks, kind), top_k=k)
        text = decoded.probabilities(k)
        iou = mask_ious(decoded.masks[:, 0], sample.masks)
        for key, predictor in {("text",): base, **taught_predictors}.items():
            if predictor is base:
                names, unknown = np.asarray(decoded.class_names), np.zeros(len(truth), bool)
            else:
                predictor.set_image_embedding(state, image=sample.image)
                fused, unknown, classes = predictor.fuse_examples(text, decoded.masks)
                names = np.asarray(classes)[fused[:, :-1].argmax(axis=1)]
            row = out.setdefault(key, {"correct": [], "unknown": [], "new": [], "iou": []})
            row["correct"].append(names == truth)
            row["unknown"].append(np.asarray(unknown, bool))
            row["new"].append(new)
            row["iou"].append(iou)
    return {key: {k: np.concatenate(v) for k, v in row.items()} for key, row in out.items()}


def share(values: np.ndarray, select: np.ndarray) -> float:
    return float(100 * values[select].mean()) if select.any() else float("nan")


def accuracy_rows(kind: str, results: dict[tuple, dict[str, np.ndarray]], shots: list[int]) -> dict:
    """{shots: (new %, known %, unknown %, per-repeat new list)} with shots 0 = text only."""
    text = results[("text",)]
    rows: dict[int, tuple[float, float, float, list[float]]] = {
        0: (share(text["correct"], text["new"]), share(text["correct"], ~text["new"]), float("nan"), [])
    }
    for n in shots:
        runs = [r for key, r in results.items() if key[:2] == (kind, n)]
        new = [share(r["correct"], r["new"]) for r in runs]
        known = [share(r["correct"], ~r["new"]) for r in runs]
        unknown = [float(100 * r["unknown"].mean()) for r in runs]
        rows[n] = (statistics.mean(new), statistics.mean(known), statistics.mean(unknown), new)
    return rows


def held_out_summary(kind: str, results: dict[tuple, dict[str, np.ndarray]]) -> str:
    text = results[("text",)]
    new, iou = text["new"], text["iou"]
    return (
        f"held out, {kind} prompts: {int(new.sum())} new-class and {int((~new).sum())} known-class objects, "
        f"mIoU of their masks {iou[new].mean():.3f} / {iou[~new].mean():.3f}"
    )


def fit_and_latency(
    base: OVSAMPredictor, pool: dict[str, np.ndarray], sample, rounds: int, rng: np.random.Generator
) -> dict[str, float]:
    """Fit time on FIT_EXAMPLES examples, and per-box latency with LATENCY_SHOTS per class vs without."""
    rows = rng.choice(len(pool["labels"]), FIT_EXAMPLES, replace=len(pool["labels"]) < FIT_EXAMPLES)
    names = [ALL_CLASS_NAMES[i] for i in pool["labels"][rows]]
    fit_set = base.examples.add(pool["features"][rows], names)
    base.set_image(sample.image)
    boxes = gt_prompts(sample.masks, "box")["boxes"]
    with_examples = taught(base, pool, draw(pool, LATENCY_SHOTS, rng))

    def fit() -> None:  # what the first predict after a change of examples does before naming
        ExemplarNaming(fit_set, base.exemplar_settings).classifier(base)

    def per_prompt(predictor: OVSAMPredictor):
        return lambda: [predictor.predict(boxes=box[None]) for box in boxes]

    fit_s = interleaved({"fit": fit}, rounds=rounds, warmup=1)["fit"]
    latency = interleaved(
        {"without": per_prompt(base), "with": per_prompt(with_examples)}, rounds=rounds, warmup=1
    )
    return {
        "fit_s": fit_s,
        "fit_pool": float(len(pool["labels"])),
        "without_ms": 1000 * latency["without"] / len(boxes),
        "with_ms": 1000 * latency["with"] / len(boxes),
    }


def real_size_latency(name: str, rounds: int) -> dict[str, float]:
    """Per-box latency with vs without examples on a model of real size (random weights: the cost does not
    depend on them) and a 1024 x 1024 image: what the examples add beside a full-size mask decoder."""
    predictor = OVSAMPredictor(random_ovsam(name))
    predictor.set_vocabulary(list(ALL_CLASS_NAMES[:4]))
    sample = generate_image(image_rng(0, "val", 0), 1024, (10, 15), extra_classes=True)
    names = [ALL_CLASS_NAMES[i] for i in sample.labels]
    predictor.learn_examples(sample.image, sample.masks, names)
    taught_set = predictor.examples
    plain = copy.copy(predictor)
    plain.set_examples(None)
    boxes = gt_prompts(sample.masks, "box")["boxes"]

    def per_prompt(p: OVSAMPredictor):
        return lambda: [p.predict(boxes=box[None]) for box in boxes]

    latency = interleaved(
        {"without": per_prompt(plain), "with": per_prompt(predictor)}, rounds=rounds, warmup=1
    )
    return {
        "examples": float(len(taught_set)),
        "without_ms": 1000 * latency["without"] / len(boxes),
        "with_ms": 1000 * latency["with"] / len(boxes),
    }


def base_text_weight() -> float:
    return FusionSettings().text_weight


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(
    args: argparse.Namespace,
    pools: dict,
    notes: list[str],
    curves: dict,
    costs: dict[str, float],
    sweeps: dict[float, tuple],
) -> None:
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"model {args.model}; examples from seed {args.example_seed} split {args.example_split} "
        f"(images 0..{args.example_images - 1}); held out: seed {args.eval_seed} split {args.eval_split} "
        f"(images 0..{args.eval_images - 1}); {args.repeats} random draws per row; new classes: "
        f"{', '.join(EXTRA_CLASS_NAMES)}; known: {', '.join(CLASS_NAMES)}"
    )
    for kind, pool in pools.items():
        new = pool["labels"] >= len(CLASS_NAMES)
        print(
            f"{kind} examples: {len(pool['labels'])} objects, IoU of their predicted masks with the truth "
            f"{pool['iou'][new].mean():.3f} (new classes) / {pool['iou'][~new].mean():.3f} (known)"
        )
    print("\n".join(notes))
    print(
        "\n| prompt | examples per class | new classes named right | known classes | unknown | new, per draw |"
    )
    print("|---|---|---|---|---|---|")
    for kind, rows in curves.items():
        for n, (new, known, unknown, runs) in rows.items():
            label = "0 (text only)" if n == 0 else str(n)
            draws = ", ".join(f"{v:.1f}" for v in runs)
            flagged = "-" if n == 0 else f"{unknown:.1f} %"
            print(f"| {kind} | {label} | {new:.1f} % | {known:.1f} % | {flagged} | {draws} |")
    if sweeps:
        default = base_text_weight()
        print(
            f"\nbox, {SWEEP_SHOTS} per class, the fusion's text weight (default {default}): new / known classes"
        )
        rows = {**sweeps, default: curves["box"][SWEEP_SHOTS]}
        for weight in sorted(rows):
            new, known = rows[weight][:2]
            print(f"  text weight {weight:g}: {new:.1f} % / {known:.1f} %")
    print()
    for kind, n, group, target in TARGETS:
        if n in curves.get(kind, {}):
            got = curves[kind][n][0 if group == "new" else 1]
            print(
                f"{verdict(got >= target)}  {kind}, {n} per class, {group} classes: {got:.1f} % (>= {target:.0f} %)"
            )
        else:
            print(f"SKIP  {kind}, {n} per class, {group} classes: not measured (--shots)")
    fit = costs["fit_s"]
    pool_note = (
        "" if costs["fit_pool"] >= FIT_EXAMPLES else f", drawn with repeats from {costs['fit_pool']:.0f}"
    )
    print(
        f"{verdict(fit < FIT_TARGET_S)}  fit on {FIT_EXAMPLES} examples{pool_note}: {1000 * fit:.1f} ms (< 1 s)"
    )
    ratio = costs["with_ms"] / costs["without_ms"]
    print(
        f"{verdict(ratio <= LATENCY_TARGET)}  per-box latency ({args.model}) with {LATENCY_SHOTS} examples per "
        f"class {costs['with_ms']:.2f} ms vs without {costs['without_ms']:.2f} ms: {ratio:.2f}x (<= {LATENCY_TARGET}x)"
    )
    if "real_with_ms" in costs:
        ratio = costs["real_with_ms"] / costs["real_without_ms"]
        print(
            f"{verdict(ratio <= LATENCY_TARGET)}  per-box latency ({args.real_size_model}, random weights, 1024 px, "
            f"{costs['real_examples']:.0f} examples) {costs['real_with_ms']:.2f} ms vs without "
            f"{costs['real_without_ms']:.2f} ms: {ratio:.2f}x (<= {LATENCY_TARGET}x)"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", help="model config or checkpoint (its own vocabulary)")
    p.add_argument("--example-seed", type=int, default=0, help="seed of the example images")
    p.add_argument("--example-split", default="train", choices=("train", "val"), help="their split")
    p.add_argument("--example-images", type=int, default=40, help="images the examples are drawn from")
    p.add_argument("--eval-seed", type=int, default=11, help="seed of the held-out images")
    p.add_argument("--eval-split", default="val", choices=("train", "val"), help="their split")
    p.add_argument("--eval-images", type=int, default=50, help="held-out images named")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5, 10, 20], help="examples per class")
    p.add_argument("--repeats", type=int, default=3, help="random draws of the examples per row")
    p.add_argument("--prompts", nargs="+", default=list(KINDS), choices=list(KINDS), help="prompt kinds")
    p.add_argument(
        "--text-weights",
        type=float,
        nargs="*",
        default=[0.0, 0.25, 1.0, 1.5],
        help="other text weights of the fusion tried at 10 per class, box prompts (the trade-off)",
    )
    p.add_argument("--rounds", type=int, default=10, help="timed rounds of the fit and latency measurements")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--real-size-model",
        default="ovsam_rn50x16",
        help="config whose per-box latency is also measured with random weights ('none': skip)",
    )
    p.add_argument("--quick", action="store_true", help="a few images, 1/3/5 shots, one draw: checks it runs")
    args = p.parse_args(argv)
    if args.quick:  # what the command line does not set
        quick = {"example_images": 12, "eval_images": 3, "shots": [1, 3, 5], "repeats": 1, "rounds": 3}
        for name, value in quick.items():
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    if (args.example_seed, args.example_split) == (args.eval_seed, args.eval_split):
        p.error("the held-out images must come from another seed or split than the examples")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    base = OVSAMPredictor(build_ovsam(args.model, device="cpu"))
    base.examples  # noqa: B018 (computes the model's fingerprint once; the taught copies share it)
    example_samples = images(args.example_seed, args.example_split, args.example_images, args.size)
    eval_samples = images(args.eval_seed, args.eval_split, args.eval_images, args.size)
    pools, curves, notes, sweeps = {}, {}, [], {}
    for kind in args.prompts:
        rng = np.random.default_rng([args.seed, list(KINDS).index(kind)])  # draws independent of --prompts
        pools[kind] = example_pool(base, example_samples, kind)
        drawn = {(n, r): draw(pools[kind], n, rng) for n in args.shots for r in range(args.repeats)}
        predictors = {(kind, n, r): taught(base, pools[kind], rows) for (n, r), rows in drawn.items()}
        if kind == "box" and SWEEP_SHOTS in args.shots:  # the same draws, other text weights
            for weight in args.text_weights:
                for r in range(args.repeats):
                    rows = drawn[(SWEEP_SHOTS, r)]
                    predictors[("sweep", weight, r)] = taught(base, pools[kind], rows, weight)
        results = evaluate(base, predictors, eval_samples, kind)
        curves[kind] = accuracy_rows(kind, results, args.shots)
        if kind == "box":
            sweeps = {w: accuracy_rows("sweep", results, [w])[w] for w in args.text_weights}
        notes.append(held_out_summary(kind, results))
    box_pool = pools.get("box") or example_pool(base, example_samples, "box")
    costs = fit_and_latency(
        base, box_pool, eval_samples[0], args.rounds, np.random.default_rng([args.seed, 9])
    )
    if args.real_size_model != "none":
        real = real_size_latency(args.real_size_model, args.rounds)
        costs.update({f"real_{k}": v for k, v in real.items()})
    report(args, pools, notes, curves, costs, sweeps)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
