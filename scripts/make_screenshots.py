"""Refresh the documentation's screenshots: the annotator in use on the bundled samples.

    xvfb-run -a python scripts/make_screenshots.py [--out docs/images] [--model demo]

Writes ``widget_start.png`` (the sample stack as it opens, model loaded, nothing annotated),
``widget_2d.png`` (three committed objects and a live preview), ``widget_stack.png`` (an object carried
through the stack), ``widget_everything.png`` (Segment everything on the 2D sample, committed and named) and
``widget_large.png`` (a 1536 x 1536 zarr mosaic of held-out synthetic images, annotated at native resolution
through tiles). The demo model is used when its weights are installed, else the tiny
random one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = ROOT / "src" / "ovsam_model" / "weights" / "ovsam_demo.safetensors"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/make_screenshots.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNG files")
    parser.add_argument(
        "--model", default="demo" if DEMO_WEIGHTS.exists() else "tiny", help="model to load (demo, tiny, ...)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Heavy: napari, Qt and torch load after the arguments are parsed.
    import napari
    import numpy as np
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_ovsam import _layers
    from napari_ovsam._qt.widget import OVSAMWidget
    from napari_ovsam._sample_data import sample_2d, sample_stack
    from napari_ovsam.prompts import box_to_shape_vertices

    def prompt(point=None, box=None) -> None:
        if point is not None:
            viewer.layers[_layers.POINTS].add(np.asarray([point], float))
        if box is not None:
            (*lead, r0, c0), (*_, r1, c1) = box
            viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((c0, r0, c1, r1), tuple(lead)))

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    stack_data, stack_kwargs, _ = sample_stack()[0]
    viewer.add_image(stack_data, **stack_kwargs)
    widget = OVSAMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="OV-SAM Annotator", area="right")
    torch.manual_seed(0)
    widget._model_panel._device.setCurrentText("cpu")
    widget.load_model(args.model)
    settle(app, widget)
    viewer.screenshot(str(args.out / "widget_start.png"), canvas_only=False)

    viewer.layers.clear()
    image_data, image_kwargs, _ = sample_2d()[0]
    image = viewer.add_image(image_data, **image_kwargs)
    widget._image_panel._image.setCurrentText(image.name)
    settle(app, widget)
    boxes = object_boxes(np.asarray(image.data), 4)
    for box in boxes[:3]:
        prompt(box=box)
    widget.commit()
    (r0, c0), (r1, c1) = boxes[3]
    prompt(point=[(r0 + r1) // 2, (c0 + c1) // 2])
    widget.segment()
    viewer.reset_view()
    settle(app, widget)
    viewer.screenshot(str(args.out / "widget_2d.png"), canvas_only=False)

    viewer.layers.clear()
    stack = viewer.add_image(stack_data, **stack_kwargs)
    widget._image_panel._image.setCurrentText(stack.name)
    viewer.dims.set_point(0, 3)
    settle(app, widget)
    (r0, c0), (r1, c1) = object_boxes(np.asarray(stack.data[3]), 1)[0]
    prompt(box=[[3, r0, c0], [3, r1, c1]])
    widget.commit()
    widget._stack._min_iou.setValue(0.0 if args.model == "demo" else -1.0)
    widget._stack._min_overlap.setValue(0.3 if args.model == "demo" else 0.0)
    widget.propagate()
    settle(app, widget)
    widget._tabs.setCurrentWidget(widget._stack)
    viewer.reset_view()
    settle(app, widget)
    viewer.screenshot(str(args.out / "widget_stack.png"), canvas_only=False)

    viewer.layers.clear()
    image = viewer.add_image(image_data, **image_kwargs)
    widget._image_panel._image.setCurrentText(image.name)
    widget._tabs.setCurrentWidget(widget._automatic)
    settle(app, widget)
    widget._automatic._points.setValue(16)
    widget.segment_everything("this slice")
    settle(app, widget)
    widget.commit()
    viewer.reset_view()
    settle(app, widget)
    viewer.screenshot(str(args.out / "widget_everything.png"), canvas_only=False)

    import zarr

    viewer.layers.clear()
    widget._tabs.setCurrentWidget(widget._annotate)
    pixels, object_boxes_xyxy = mosaic()
    store = zarr.create_array(
        store=str(Path(tempfile.mkdtemp()) / "mosaic.zarr"),
        shape=pixels.shape,
        dtype=pixels.dtype,
        chunks=(512, 512),
    )
    store[...] = pixels
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    large = viewer.add_image(store, name="mosaic (1536 x 1536, zarr)", contrast_limits=(float(lo), float(hi)))
    widget._image_panel._image.setCurrentText(large.name)
    settle(app, widget)
    chosen = [b for b in object_boxes_xyxy if 560 <= b[0] < 980 and 480 <= b[1] < 860][:6]
    for x0, y0, x1, y1 in chosen[:5]:
        prompt(box=[[y0, x0], [y1, x1]])
    settle(app, widget)
    widget.commit()
    settle(app, widget)
    x0, y0, x1, y1 = chosen[5]
    prompt(box=[[y0, x0], [y1, x1]])
    settle(app, widget)
    corners = np.array(chosen, float)
    viewer.scene.camera.center = (float(corners[:, [1, 3]].mean()), float(corners[:, [0, 2]].mean()) + 20)
    viewer.scene.camera.zoom = 820 / (max(np.ptp(corners[:, [1, 3]]), np.ptp(corners[:, [0, 2]])) + 120)
    settle(app, widget)
    viewer.screenshot(str(args.out / "widget_large.png"), canvas_only=False)
    print(f"Wrote {', '.join(p.name for p in sorted(args.out.glob('widget_*.png')))} to {args.out}")
    widget.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
