"""Per-prompt latency through the widget vs the bare predictor call on the same cached embedding.
Target: widget path <= 1.5x the bare predictor.

The widget side is driven as a user drives it: a real, shown ``napari.Viewer`` (run it under ``xvfb-run -a``;
a hidden viewer never draws, so napari redraws whole layers where a shown one updates only what changed), the
OVSAMWidget docked in it, the model loaded through the Load button's code path, the
image chosen, its embedding computed by the widget's worker (the script processes Qt events until each
background job is done). Then, each round, the "ovsam boxes" layer's data is set to a new rectangle (what
drawing one ends with) and the clock runs until the "ovsam preview" layer holds new data, processing Qt
events in a loop (time.perf_counter). The target's clock runs from the layer event (the Shapes data event
with action "changed", which the widget listens to) to the preview updated; the time from before napari's
Shapes setter, which adds napari's own handling of the drawn rectangle, is printed too.

The live path runs inside the layer's data event (so napari draws the prompt and its preview in one frame);
an identical second event (napari sends a data and a features event per edit) is recognised and skipped. The
widget's steps are timed by wrapping instance attributes (the plugin code is not changed): the annotate panel's
``segment`` (``widget._annotate.segment``), ``session.segment`` and ``_layers.show_preview``.

The bare side is ``predictor.predict(boxes=..., multimask_output=False, top_k=5)`` for the same box on the
same predictor with the same embedding set (what the session calls under the hood); the session's Qt-free
``segment`` for the same prompt is the third column. The three run in alternation (median of N).

    xvfb-run -a python benchmarks/bench_widget_latency.py [--model auto] [--rounds 30] [--size 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

TARGET = 1.5
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) pixels


def models_to_run(name: str) -> list[str]:
    """``auto``: ``tiny``, plus the trained ``demo`` model when its weights are installed."""
    if name != "auto":
        return [name]
    from ovsam_model.hub import PACKAGE_WEIGHTS_DIR

    return ["tiny"] + (["demo"] if (PACKAGE_WEIGHTS_DIR / "ovsam_demo.safetensors").is_file() else [])


def wait_until(app: Any, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Process Qt events until ``condition()`` holds (a worker finished, a layer changed)."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}.")
        app.processEvents()


def drain(app: Any, seconds: float = 0.02) -> None:
    """Let napari finish what the last update queued, so it does not land in the next round."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()


def random_boxes(rng: np.random.Generator, size: int, n: int) -> list[Box]:
    """``n`` boxes (x0, y0, x1, y1) in pixels of a (size, size) image, 5%..40% of its side."""
    sides = rng.uniform(0.05, 0.4, (n, 2)) * size
    x0 = rng.uniform(0, size - sides[:, 0])
    y0 = rng.uniform(0, size - sides[:, 1])
    return [tuple(float(v) for v in b) for b in np.stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]], 1)]


def whole_image_size(model: str, size: int) -> int:
    """``size``, or the largest side the model does not tile (the widget tiles larger images; the tiled path's
    per-prompt latency is bench_tiling_latency.py's)."""
    from ovsam_model.config import load_config
    from ovsam_model.tiling import resolve_tiling

    spec = resolve_tiling("auto", load_config(model).image_size)
    while spec is not None and spec.tiles((size, size)):
        size -= 1
    return size


def setup(model: str, size: int, timeout: float) -> tuple[Any, Any, Any]:
    """A shown viewer with an image, the docked widget, the model loaded and the image embedded."""
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from common import blob_image
    from napari_ovsam._qt.widget import OVSAMWidget

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(blob_image(size), name="cells")
    widget = OVSAMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="OV-SAM Annotator", area="right")
    torch.manual_seed(0)  # the tiny model's random weights, reproducibly
    widget._model_panel._model.setCurrentText(model)
    widget._model_panel._device.setCurrentText("cpu")
    if widget.load_model() is None:
        raise RuntimeError(f"The widget refused to load {model}: {widget.status}")
    wait_until(app, lambda: not widget.busy, timeout, "the model and the first embedding")
    if widget.session.predictor is None:
        raise RuntimeError(f"Loading {model} failed: {widget.status}")
    wait_until(app, lambda: widget.session.embedding_ready(()), timeout, "the image embedding")
    return viewer, widget, app


class Probe:
    """Timestamps of the widget path's steps, taken by wrapping attributes (the plugin code is unchanged)."""

    def __init__(self, widget: Any, boxes: Any) -> None:
        from napari_ovsam import _layers

        self.marks: dict[str, float] = {}
        self.spans: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        widget._annotate.segment = self._timed(widget._annotate.segment, "segment", mark="fired")
        widget.session.segment = self._timed(widget.session.segment, "session")
        self._layers, self._show = _layers, _layers.show_preview
        _layers.show_preview = self._timed(self._show, "preview")
        boxes.events.data.connect(self._on_data, position="first")  # before the widget handles it

    def _on_data(self, event: Any) -> None:
        if str(getattr(event, "action", "")) == "changed":  # the event the widget's live path listens to
            self.marks["event"] = time.perf_counter()

    def _timed(self, fn: Callable[..., Any], span: str, mark: str | None = None) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            if mark is not None:
                self.marks[mark] = start
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans[span] = time.perf_counter() - start
                self.calls[span] = self.calls.get(span, 0) + 1

        return run

    def close(self) -> None:
        self._layers.show_preview = self._show


def measure(viewer: Any, widget: Any, app: Any, args: argparse.Namespace) -> dict[str, float]:
    """Widget, bare predictor and session prompts in alternation; median seconds of each quantity."""
    from napari_ovsam import _layers
    from napari_ovsam.prompts import box_to_shape_vertices

    boxes = viewer.layers[_layers.BOXES]
    session, predictor = widget.session, widget.session.predictor
    probe = Probe(widget, boxes)
    times: dict[str, list[float]] = {}

    def keep(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    def widget_prompt(box: Box, timed: bool) -> None:
        drawn = probe.calls.get("preview", 0)

        def updated() -> bool:  # the preview layer was redrawn (its array may be updated in place)
            return probe.calls.get("preview", 0) > drawn

        start = time.perf_counter()
        boxes.data = [(box_to_shape_vertices(box), "rectangle")]  # a drawn rectangle replaces the last one
        set_done = time.perf_counter()
        wait_until(app, updated, args.timeout, "the preview")
        end = time.perf_counter()
        if widget._annotate._results is None or len(widget._annotate._results) != 1:
            raise RuntimeError(f"The widget did not segment the box: {widget.status}")
        if timed:
            for name, seconds in (
                ("widget", end - start), ("setter", set_done - start), ("event", end - probe.marks["event"]),
                ("to_segment", probe.marks["fired"] - probe.marks["event"]), ("segment", probe.spans["segment"]),
                ("part_session", probe.spans["session"]), ("part_preview", probe.spans["preview"]),
            ):  # fmt: skip
                keep(name, seconds)
        drain(app)

    def bare_prompt(box: Box, timed: bool) -> None:
        array = np.asarray([box], np.float32)
        start = time.perf_counter()
        predictor.predict(boxes=array, multimask_output=False, top_k=session.top_k)
        if timed:
            keep("bare", time.perf_counter() - start)

    def session_prompt(box: Box, timed: bool) -> None:
        shapes = [box_to_shape_vertices(box)]
        start = time.perf_counter()
        session.segment(np.zeros((0, 2)), np.zeros(0, bool), shapes, ["rectangle"], slice_index=())
        if timed:
            keep("session", time.perf_counter() - start)

    try:
        rng = np.random.default_rng(1)
        for i, box in enumerate(random_boxes(rng, args.size, args.warmup + args.rounds)):
            timed = i >= args.warmup
            widget_prompt(box, timed)  # first: the session restores the embedding as the widget uses it
            bare_prompt(box, timed)
            session_prompt(box, timed)
    finally:
        probe.close()
    return {name: statistics.median(values) for name, values in times.items()}


def report(
    model: str, image_size: int, med: dict[str, float], args: argparse.Namespace, setup_s: float
) -> float:
    ms = {k: 1000 * v for k, v in med.items()}
    ratio = med["event"] / med["bare"]
    print(
        f"model '{model}' ({image_size} px input), {args.size}x{args.size} uint16 image, one box per prompt, "
        f"median of {args.rounds} interleaved rounds (viewer + model + embedding ready in {setup_s:.1f} s)"
    )
    print(f"  bare predictor.predict (box -> mask + names)        : {ms['bare']:8.2f} ms")
    print(f"  session.segment (Qt-free: layer data -> objects)    : {ms['session']:8.2f} ms")
    print(f"  widget: boxes.data = box -> preview data changed    : {ms['widget']:8.2f} ms")
    print(f"    napari's Shapes setter (returns after the path)   : {ms['setter']:8.2f} ms")
    print(f"    data event -> widget.segment started              : {ms['to_segment']:8.2f} ms")
    print(f"    widget.segment (context, decode, preview, status) : {ms['segment']:8.2f} ms")
    print(f"      of which session.segment                        : {ms['part_session']:8.2f} ms")
    print(f"      of which _layers.show_preview                   : {ms['part_preview']:8.2f} ms")
    print(f"  widget: 'changed' data event -> preview changed     : {ms['event']:8.2f} ms")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(
        f"  ratio layer event -> preview / bare predictor       : {ratio:8.2f}  (target <= {TARGET}: {verdict})"
    )
    print(f"  ratio from before the Shapes setter / bare          : {med['widget'] / med['bare']:8.2f}")
    print(f"  ratio session.segment / bare                        : {med['session'] / med['bare']:8.2f}")
    return ratio


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default="auto", help="auto (tiny, and demo if its weights are installed), tiny, demo"
    )
    p.add_argument("--rounds", type=int, default=30, help="timed prompts per side (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed prompts per side first")
    p.add_argument("--size", type=int, default=1024, help="side of the square uint16 test image, pixels")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a job or an update")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from common import machine

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"  load average before timing: {os.getloadavg()[0]:.2f} (2 cores)")
    ratios = {}
    asked = args.size
    for model in models_to_run(args.model):
        size = whole_image_size(model, asked)
        if size != asked:
            print(f"  {model}: a {asked} px image is tiled; timing the whole-image path on {size} px instead")
        args.size = size
        started = time.perf_counter()
        viewer, widget, app = setup(model, size, args.timeout)
        setup_s = time.perf_counter() - started
        med = measure(viewer, widget, app, args)
        ratios[model] = report(model, widget.session.predictor.model.config.image_size, med, args, setup_s)
        widget.close()
        viewer.close()
    return ratios


if __name__ == "__main__":
    main()
