"""``python -m ovsam_model.annotate``: segment and name every object of many images, into one COCO file.

::

    python -m ovsam_model.annotate images/ stack.tif --model demo --out annotations.json \\
        [--vocabulary classes.txt] [--classes nucleus,rod] [--labels-out labels.zarr] [--overwrite] \\
        [--workers 4 | --scheduler tcp://HOST:PORT] [--points-per-side 32 --min-iou 0.6 ...]

Inputs are image files, TIFF/zarr/``.npy`` stacks (each slice one COCO image entry with its
``slice_index``) and folders of them. Slices run in this process, on a local Dask cluster (``--workers``), or
on an existing one (``--scheduler``); the run is resumable (see ``ovsam_model.annotate.output``). Exit status:
0 done, 1 some slices failed (the others are kept: run again to retry), 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..automatic import AutomaticAnnotator, annotator_defaults
from ..cli_parser import OneLineErrorParser, fail
from ..vocabulary import Vocabulary
from . import output
from .cluster import DEFAULT_RETRIES, dask_client, run_on_cluster, run_tasks
from .inputs import SliceRef, collect_slices
from .work import AnnotatorSpec, SliceResult, annotate_slice, vocabulary_names

PROG = "python -m ovsam_model.annotate"
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130

# The annotator's settings on the command line; each default is AutomaticAnnotator's own.
SETTINGS: dict[str, tuple[type, str]] = {
    "points_per_side": (int, "grid points along each image side"),
    "points_per_batch": (int, "prompts decoded at once"),
    "min_iou": (float, "lowest predicted IoU kept (0-1)"),
    "min_stability": (float, "lowest stability score kept (0-1)"),
    "min_score": (float, "lowest probability of the named class (0-1)"),
    "max_background": (float, "highest probability of the background class (0-1)"),
    "nms_iou": (float, "box IoU above which the less confident of two proposals is dropped (0-1)"),
    "min_area": (int, "smallest object in pixels"),
    "top_k": (int, "alternative class names kept per object"),
}
DEFAULTS = annotator_defaults()


@dataclass(frozen=True)
class AnnotateConfig:
    """A parsed command line: inputs, outputs, where tasks run, and the annotator's spec."""

    inputs: tuple[str, ...]
    out: Path
    labels_out: Path | None
    overwrite: bool
    scheduler: str | None
    workers: int | None
    retries: int
    spec: AnnotatorSpec


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG, description="Segment and name every object of images and stacks into one COCO JSON file."
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, stacks (.tif, .zarr, .npy), folders"
    )
    parser.add_argument(
        "--out", required=True, help="COCO JSON file to write (RLE masks, class names, scores)"
    )
    parser.add_argument(
        "--labels-out", default=None, help="also write a zarr label array, (Z, H, W) or (H, W)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs of this tool")
    parser.add_argument(
        "--model", default="demo", help="model name, config JSON or checkpoint (default: demo)"
    )
    parser.add_argument("--checkpoint", default=None, help="weights file for the model (optional)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    parser.add_argument(
        "--vocabulary",
        default=None,
        help="text file, one class per line, synonyms after commas (default: the model's own vocabulary)",
    )
    parser.add_argument("--classes", default=None, help="keep only these classes, comma-separated (find all)")
    parser.add_argument(
        "--contrast-limits", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
        help="intensity range mapped to the model input (default: per-image percentiles)",
    )  # fmt: skip
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", default=None, help="address of a running Dask scheduler, tcp://HOST:PORT"
    )
    where.add_argument("--workers", type=int, default=None, help="start a local Dask cluster of N processes")
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"retries of a failed Dask task ({DEFAULT_RETRIES})",
    )
    settings = parser.add_argument_group("annotator settings (defaults: AutomaticAnnotator's)")
    for name, (kind, text) in SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        settings.add_argument(
            flag, type=kind, default=DEFAULTS[name], help=f"{text} (default {DEFAULTS[name]})"
        )
    settings.add_argument("--class-agnostic", action="store_true", help="suppress duplicates across classes")
    return parser


def parse_args(argv: list[str] | None = None) -> AnnotateConfig:
    """Parse and check a command line (bad values exit with one line and status 2)."""
    args = build_parser().parse_args(argv)
    try:
        return _config(args)
    except ValueError as error:
        fail(PROG, str(error))


def _config(args: argparse.Namespace) -> AnnotateConfig:
    settings = {name: getattr(args, name) for name in SETTINGS}
    settings["class_agnostic"] = args.class_agnostic
    AutomaticAnnotator(None, **settings)  # checks every setting (the predictor is not used until annotate)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be 1 or more, got {args.workers}.")
    if args.retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {args.retries}.")
    vocabulary = _read_vocabulary(args.vocabulary) if args.vocabulary is not None else None
    classes = _parse_classes(args.classes)
    if vocabulary is not None and classes is not None:
        check_classes(classes, vocabulary.names)
    spec = AnnotatorSpec(
        model=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        vocabulary=vocabulary.to_text() if vocabulary is not None else None,
        settings=tuple(sorted(settings.items())),
        classes=classes,
        contrast_limits=tuple(args.contrast_limits) if args.contrast_limits else None,
    )
    return AnnotateConfig(
        inputs=tuple(args.inputs),
        out=Path(args.out).expanduser().absolute(),
        labels_out=Path(args.labels_out).expanduser().absolute() if args.labels_out else None,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        workers=args.workers,
        retries=args.retries,
        spec=spec,
    )


def _read_vocabulary(path: str) -> Vocabulary:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"Vocabulary file not found: {file} (a text file, one class per line).")
    try:
        return Vocabulary.from_text(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"--vocabulary {file}: {error}") from None


def _parse_classes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    classes = tuple(" ".join(c.split()) for c in text.split(",") if c.strip())
    if not classes:
        raise ValueError("--classes names no class: give names separated by commas, e.g. nucleus,rod.")
    return classes


def check_classes(classes: tuple[str, ...], names: list[str]) -> None:
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ValueError(
            f"--classes: the vocabulary has no class {', '.join(map(repr, unknown))}; its classes are "
            f"{', '.join(names)}. Pick from these, or add it to the --vocabulary file."
        )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (see the module docstring)."""
    config = parse_args(argv)
    try:
        refs = collect_slices(config.inputs, relative_to=config.out.parent)
        shape = output.labels_shape_of(refs) if config.labels_out is not None else None
        resume = output.check_outputs(config.out, config.labels_out, shape, overwrite=config.overwrite)
        journal = output.journal_path(config.out)
        resumed = output.read_journal(journal, _options(config, refs)) if resume else None
    except ValueError as error:
        fail(PROG, str(error))
    with _client(config) as client:
        try:
            names = run_on_cluster(vocabulary_names, config.spec, client=client)
            if config.spec.classes is not None:
                check_classes(config.spec.classes, names)
        except (ValueError, FileNotFoundError) as error:
            fail(PROG, str(error))
        return _run(config, refs, names, shape, resumed, client)


@contextmanager
def _client(config: AnnotateConfig) -> Iterator[Any]:
    """A Dask client for --scheduler or --workers (a bad address: one line, exit 2), else None."""
    if config.scheduler is None and config.workers is None:
        yield None
        return
    with ExitStack() as stack:
        try:
            client = stack.enter_context(dask_client(config.scheduler, config.workers))
        except ValueError as error:
            fail(PROG, str(error))
        yield client


def _options(config: AnnotateConfig, refs: list[SliceRef]) -> dict[str, Any]:
    """What a resumed run must repeat: the spec's options, the slices, and whether labels are written."""
    return {
        **config.spec.options(),
        "inputs": [[r.path, r.slice_index] for r in refs],
        "labels_out": str(config.labels_out) if config.labels_out is not None else None,
    }


def _run(
    config: AnnotateConfig,
    refs: list[SliceRef],
    names: list[str],
    shape: tuple[int, ...] | None,
    resumed: dict[int, list[dict[str, Any]]] | None,
    client: Any,
) -> int:
    """Annotate the slices not done yet (``resumed``: those of the journal, None for a new run), recording
    each in the journal as it comes back; then write the COCO file."""
    if config.overwrite:
        output.remove_outputs(config.out, config.labels_out)
    labels = output.open_labels(config.labels_out, shape) if config.labels_out and shape else None
    done = dict(resumed or {})
    journal = output.Journal(
        output.journal_path(config.out), _options(config, refs), resume=resumed is not None
    )
    failed: list[tuple[SliceRef, BaseException]] = []
    todo = [r for r in refs if r.index not in done]
    bar = tqdm(total=len(refs), initial=len(refs) - len(todo), unit="slice", desc="annotating")

    def finished(ref: SliceRef, result: SliceResult) -> None:
        if labels is not None and result.labels is not None:
            output.write_labels(labels, ref.index, result.labels)  # before the journal says it is done
        journal.record(ref.index, result.annotations)
        done[ref.index] = result.annotations
        bar.update(1)

    def broke(ref: SliceRef, error: BaseException) -> None:
        failed.append((ref, error))
        bar.set_postfix(failed=len(failed))

    try:
        run_tasks(
            annotate_slice, todo, client=client, on_result=finished, on_failure=broke,
            retries=config.retries, spec=config.spec, want_labels=labels is not None,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(f"\nInterrupted: {len(done)} of {len(refs)} slice(s) done; run the same command to resume.")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
        journal.close()
    return _finish(config, refs, names, done, failed, resumed=len(refs) - len(todo))


def _finish(
    config: AnnotateConfig,
    refs: list[SliceRef],
    names: list[str],
    done: dict[int, list[dict[str, Any]]],
    failed: list[tuple[SliceRef, BaseException]],
    resumed: int,
) -> int:
    if failed:
        for ref, error in failed:
            message = " ".join(f"{type(error).__name__}: {error}".split())
            print(f"{PROG}: slice failed: {ref.describe()}: {message}", file=sys.stderr)
        print(
            f"{len(done)} of {len(refs)} slice(s) done, {len(failed)} failed; the finished ones are kept in "
            f"{output.journal_path(config.out)}: run the same command again to retry the failed slices."
        )
        return EXIT_FAILED
    info = {"model": config.spec.model, "classes": names}
    objects = output.write_coco(config.out, refs, names, done, info)
    output.journal_path(config.out).unlink()
    print(
        f"{len(refs)} slice(s) done ({resumed} from an earlier run), {objects} object(s) found; "
        f"annotations: {config.out}" + (f", labels: {config.labels_out}" if config.labels_out else "")
    )
    return 0
