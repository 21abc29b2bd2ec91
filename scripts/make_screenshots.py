"""Refresh the documentation's screenshots: the annotator in use on the bundled samples.

    xvfb-run -a python scripts/make_screenshots.py [--out docs/images] [--model demo]

Writes, in this order, 1400 x 900 each:

- ``widget_start.png``: the sample stack as it opens, model loaded, nothing annotated;
- ``widget_2d.png``: three committed objects and a live preview;
- ``widget_stack.png``: an object carried through the stack;
- ``widget_everything.png``: Segment everything on the 2D sample, committed and named;
- ``widget_review.png``: the same objects in the table sorted by uncertainty, after N (next uncertain
  object), K (accept its name) and Alt+2 (rename the next one to its second alternative);
- ``widget_finetune.png``: the Fine-tune tab with those objects committed, before any run: Fine-tune pressed,
  the status line counts the named objects per class and how many more it needs;
- ``widget_large.png``: a 1536 x 1536 zarr mosaic of held-out synthetic images, annotated at native
  resolution through tiles;
- ``widget_teach.png``: the Teach tab on a synthetic image with dumbbells (a class the demo model never saw):
  'dumbbell' added and taught by three commits, four other objects committed (wrong names corrected), a
  fourth dumbbell's preview named from the examples;
- ``widget_remote.png``: the Model box on the remote backend, connected to an OV-SAM server on this machine
  (the same model), two objects committed from boxes and a third previewed; the status line times the
  prompt's round trip.

``--scenes remote teach`` refreshes only those (start, 2d, stack, everything, finetune, large, teach, remote).
The demo model is used when its weights are installed, else the tiny random one. Nothing is trained.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = ROOT / "src" / "ovsam_model" / "weights" / "ovsam_demo.safetensors"
TEACH_SEED = 9  # the synthetic image of the Teach scene: twelve objects, four of them dumbbells


def wait_until(app, condition: Callable[[], bool], timeout: float = 120.0) -> None:
    """Run the Qt event loop until ``condition()`` holds (RuntimeError after ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError("Timed out waiting for the widget.")
        app.processEvents()
        time.sleep(0.01)


def settle(app, widget) -> None:
    """Until no job runs and no embedding waits, then let the canvas draw."""
    wait_until(app, lambda: not widget.busy and not widget._embeddings.pending)
    for _ in range(20):
        app.processEvents()


def object_boxes(image, count: int) -> list[list[list[int]]]:
    """(row, col) corner boxes, 3 px margin, of the ``count`` largest compact bright objects of a 2D image."""
    import numpy as np
    from skimage.measure import label, regionprops

    regions = regionprops(label(image > np.percentile(image, 96)))
    regions = sorted(regions, key=lambda r: (r.solidity > 0.9, r.area), reverse=True)[:count]
    h, w = image.shape
    return [
        [[max(r.bbox[0] - 3, 0), max(r.bbox[1] - 3, 0)], [min(r.bbox[2] + 3, h), min(r.bbox[3] + 3, w)]]
        for r in regions
    ]


def mask_box(mask, margin: int = 1) -> list[list[int]]:
    """(row, col) corner box of a bool (H, W) mask, ``margin`` px around it, inside the image."""
    import numpy as np

    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return [
        [max(int(rows.min()) - margin, 0), max(int(cols.min()) - margin, 0)],
        [min(int(rows.max()) + margin, h - 1), min(int(cols.max()) + margin, w - 1)],
    ]


def mosaic(side: int = 256, per_row: int = 6, seed: int = 11):
    """A (side * per_row)^2 uint16 mosaic of synthetic images (held-out seed) and its objects' XYXY boxes."""
    import numpy as np

    from ovsam_model.data.synthetic import generate_image, image_rng

    image = np.zeros((side * per_row, side * per_row), np.uint16)
    boxes = []
    for i in range(per_row * per_row):
        picture = generate_image(image_rng(seed, "val", i), side)
        r, c = divmod(i, per_row)
        image[r * side : (r + 1) * side, c * side : (c + 1) * side] = picture.image
        for mask in sorted(picture.masks, key=lambda m: -m.sum())[:3]:
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            boxes.append(
                (
                    c * side + cols[0] - 3,
                    r * side + rows[0] - 3,
                    c * side + cols[-1] + 3,
                    r * side + rows[-1] + 3,
                )
            )
    return image, boxes


@dataclass
class Shots:
    """The viewer with the docked widget, where the PNG files go, and the bundled samples.

    flat / stack: the 2D sample and the stack sample as (data, add_image keyword arguments).
    """

    viewer: Any
    app: Any
    widget: Any
    out: Path
    model: str
    flat: tuple[Any, dict[str, Any]]
    stack: tuple[Any, dict[str, Any]]

    def settle(self) -> None:
        settle(self.app, self.widget)

    def show(self, data: Any, kwargs: dict[str, Any], at: int | None = None) -> Any:
        """Only this image in the viewer, chosen in the widget (at slice ``at`` of a stack); its layer."""
        self.viewer.layers.clear()
        image = self.viewer.add_image(data, **kwargs)
        self.widget._image_panel._image.setCurrentText(image.name)
        if at is not None:
            self.viewer.dims.set_point(0, at)
        self.settle()
        return image

    def prompt(self, point=None, box=None) -> None:
        """Add a positive point ((..., row, col)) and / or a box ((..., row, col) corners) as the user would."""
        import numpy as np  # with napari_ovsam (napari, Qt): heavy, loaded once the arguments are parsed

        from napari_ovsam import _layers
        from napari_ovsam.prompts import box_to_shape_vertices

        if point is not None:
            self.viewer.layers[_layers.POINTS].add(np.asarray([point], float))
        if box is not None:
            (*lead, r0, c0), (*_, r1, c1) = box
            vertices = box_to_shape_vertices((c0, r0, c1, r1), tuple(lead))
            self.viewer.layers[_layers.BOXES].add_rectangles(vertices)

    def shot(self, name: str) -> None:
        self.settle()
        self.viewer.screenshot(str(self.out / name), canvas_only=False)

    def press(self, key: str) -> None:
        """Press a key on the canvas (the viewer's key binding), then settle."""
        from napari.utils.key_bindings import coerce_keybinding  # heavy: napari

        self.viewer.keymap[coerce_keybinding(key)](self.viewer)
        self.settle()


def two_d(s: Shots) -> None:
    """Three objects committed from boxes, a fourth previewed from a click."""
    import numpy as np

    image = s.show(*s.flat)
    boxes = object_boxes(np.asarray(image.data), 4)
    for box in boxes[:3]:
        s.prompt(box=box)
    s.widget.commit()
    (r0, c0), (r1, c1) = boxes[3]
    s.prompt(point=[(r0 + r1) // 2, (c0 + c1) // 2])
    s.widget.segment()
    s.viewer.reset_view()
    s.shot("widget_2d.png")


def stack(s: Shots) -> None:
    """An object boxed on slice 3 and propagated through the stack."""
    import numpy as np

    layer = s.show(*s.stack, at=3)
    (r0, c0), (r1, c1) = object_boxes(np.asarray(layer.data[3]), 1)[0]
    s.prompt(box=[[3, r0, c0], [3, r1, c1]])
    s.widget.commit()
    s.widget._stack._min_iou.setValue(0.0 if s.model == "demo" else -1.0)
    s.widget._stack._min_overlap.setValue(0.3 if s.model == "demo" else 0.0)
    s.widget.propagate()
    s.settle()
    s.widget._tabs.setCurrentWidget(s.widget._stack)
    s.viewer.reset_view()
    s.shot("widget_stack.png")


def everything_and_review(s: Shots) -> None:
    """Segment everything on the 2D sample and commit; then review: N, K, Alt+2 in the sorted table."""
    s.show(*s.flat)
    s.widget._tabs.setCurrentWidget(s.widget._automatic)
    s.widget._automatic._points.setValue(16)
    s.widget.segment_everything("this slice")
    s.settle()
    s.widget.commit()
    s.viewer.reset_view()
    s.shot("widget_everything.png")

    s.widget._tabs.setCurrentWidget(s.widget._annotate)
    for key in ("N", "K", "Alt-2"):
        s.press(key)
    s.viewer.scene.camera.zoom *= 1.3
    s.shot("widget_review.png")


def finetune(s: Shots) -> None:
    """The Fine-tune tab on the objects committed so far; Fine-tune pressed with too few objects to train
    on, so the status line counts them (nothing runs)."""
    panel = s.widget._finetune
    folder = Path(tempfile.mkdtemp()) / "cells"
    folder.mkdir()
    panel._folder.setText(str(folder))
    s.widget._tabs.setCurrentWidget(panel)
    if panel.training_set() is not None:
        raise RuntimeError(
            "The Fine-tune screenshot shows the objects counted before any run, but there are enough to "
            "train on: commit fewer objects in its scene."
        )
    panel._start_btn.click()
    s.viewer.reset_view()
    s.shot("widget_finetune.png")


def large(s: Shots) -> None:
    """A zarr mosaic annotated through tiles: five objects committed, a sixth previewed, zoomed on them."""
    import numpy as np
    import zarr  # heavy, and only this scene needs it

    s.widget._tabs.setCurrentWidget(s.widget._annotate)
    pixels, object_boxes_xyxy = mosaic()
    store = zarr.create_array(
        store=str(Path(tempfile.mkdtemp()) / "mosaic.zarr"),
        shape=pixels.shape,
        dtype=pixels.dtype,
        chunks=(512, 512),
    )
    store[...] = pixels
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    s.show(store, {"name": "mosaic (1536 x 1536, zarr)", "contrast_limits": (float(lo), float(hi))})
    chosen = [b for b in object_boxes_xyxy if 560 <= b[0] < 980 and 480 <= b[1] < 860][:6]
    for x0, y0, x1, y1 in chosen[:5]:
        s.prompt(box=[[y0, x0], [y1, x1]])
    s.settle()
    s.widget.commit()
    s.settle()
    x0, y0, x1, y1 = chosen[5]
    s.prompt(box=[[y0, x0], [y1, x1]])
    s.settle()
    corners = np.array(chosen, float)
    camera = s.viewer.scene.camera
    camera.center = (float(corners[:, [1, 3]].mean()), float(corners[:, [0, 2]].mean()) + 20)
    camera.zoom = 820 / (max(np.ptp(corners[:, [1, 3]]), np.ptp(corners[:, [0, 2]])) + 120)
    s.shot("widget_large.png")


def teach(s: Shots) -> None:
    """'dumbbell' added in the Teach tab and taught by three commits; four other objects committed (names
    corrected where the model was wrong); the remaining dumbbells previewed, named from the examples."""
    import numpy as np

    from ovsam_model.data.synthetic_images import ALL_CLASS_NAMES, generate_image

    picture = generate_image(np.random.default_rng(TEACH_SEED), 256, (10, 15), extra_classes=True)
    truth = [ALL_CLASS_NAMES[c] for c in picture.labels]
    dumbbells = [m for m, name in zip(picture.masks, truth) if name == "dumbbell"]
    others = [
        (m, name) for m, name in zip(picture.masks, truth) if name in ("cluster", "ring", "nucleus", "rod")
    ]
    s.show(picture.image, {"name": "cells (synthetic, with dumbbells)"})
    panel = s.widget._teach
    s.widget._tabs.setCurrentWidget(panel)
    panel._new_class.setText("dumbbell")
    panel._add.click()
    for mask in dumbbells[:3]:
        s.prompt(box=mask_box(mask))
    s.widget.commit()
    s.settle()
    panel._commit_class.setCurrentIndex(0)  # back to the model's choice
    panel._commit_class.activated.emit(0)
    for mask, _ in others[:4]:
        s.prompt(box=mask_box(mask))
    group = s.widget.commit()
    s.settle()
    for label_id, (_, name) in zip(group.label_ids, others[:4]):
        if s.widget.session.target.row(label_id)["class_name"] != name:
            s.widget._labels.table.renamed.emit(label_id, name)  # the user corrects a name
    s.settle()
    for mask in dumbbells[3:]:
        s.prompt(box=mask_box(mask))
    s.widget.segment()
    s.viewer.reset_view()
    s.shot("widget_teach.png")


def remote(s: Shots) -> None:
    """The remote backend: a server on this machine (the same model) in a thread, the widget connected to it."""
    import numpy as np

    from ovsam_model.build import build_ovsam
    from ovsam_model.predictor import OVSAMPredictor
    from ovsam_model.serve import DEFAULT_PORT
    from ovsam_model.serve.app import create_app
    from ovsam_model.serve.engine import Engine
    from ovsam_model.serve.local import free_port, serve_in_thread

    engine = Engine(OVSAMPredictor(build_ovsam(s.model, device="cpu")))
    try:
        port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port()
        with serve_in_thread(create_app(engine), port=port) as url:
            s.settle()  # the local model's loading, when this scene runs first
            s.widget._model_panel.set_backend("remote")
            if s.widget.connect_remote(url) is None:
                raise RuntimeError(f"Connecting to {url} was refused: {s.widget.status}")
            s.settle()
            if not getattr(s.widget.session.predictor, "remote", False):
                raise RuntimeError(f"The widget did not connect to {url}: {s.widget.status}")
            image = s.show(*s.flat)
            boxes = object_boxes(np.asarray(image.data), 3)
            for box in boxes[:2]:
                s.prompt(box=box)
            s.widget.commit()
            s.prompt(box=boxes[2])
            s.widget.segment()
            s.viewer.reset_view()
            s.shot("widget_remote.png")
    finally:
        engine.close()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


SCENES: dict[str, Callable[[Shots], None]] = {
    "start": lambda s: s.shot("widget_start.png"),
    "2d": two_d,
    "stack": stack,
    "everything": everything_and_review,
    "finetune": finetune,
    "large": large,
    "teach": teach,
    "remote": remote,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/make_screenshots.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNG files")
    parser.add_argument(
        "--model", default="demo" if DEMO_WEIGHTS.exists() else "tiny", help="model to load (demo, tiny, ...)"
    )
    parser.add_argument(
        "--scenes", nargs="+", choices=list(SCENES), default=list(SCENES), help="the screenshots to refresh"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Heavy: napari, Qt and torch load after the arguments are parsed.
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_ovsam._qt.widget import OVSAMWidget
    from napari_ovsam._sample_data import sample_2d, sample_stack

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    stack_data, stack_kwargs, _ = sample_stack()[0]
    image_data, image_kwargs, _ = sample_2d()[0]
    viewer.add_image(stack_data, **stack_kwargs)
    widget = OVSAMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="OV-SAM Annotator", area="right")
    torch.manual_seed(0)
    widget._model_panel._device.setCurrentText("cpu")
    widget.load_model(args.model)
    shots = Shots(
        viewer, app, widget, args.out, args.model, (image_data, image_kwargs), (stack_data, stack_kwargs)
    )
    for name in [n for n in SCENES if n in args.scenes]:  # in order: later scenes build on earlier ones
        SCENES[name](shots)
    names = ", ".join(p.name for p in sorted(args.out.glob("widget_*.png")))
    print(f"Wrote {names} to {args.out} in {time.monotonic() - started:.0f} s")
    widget.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
