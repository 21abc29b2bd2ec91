"""``python -m napari_ovsam.launch``: open napari with the OV-SAM annotator on the bundled sample stack.

The main job of ``scripts/launch.sh``: the sample stack (synthetic fluorescence cells: nucleus, rod, ring,
cluster), the annotator docked on the right, and the model loading in the background.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m napari_ovsam.launch", description=__doc__)
    p.add_argument(
        "--model", default="demo", help="model to load (demo, ovsam_rn50x16, ..., or a checkpoint)"
    )
    p.add_argument("--sample", choices=("stack", "2d"), default="stack", help="which bundled sample to open")
    args = p.parse_args(argv)
    # Heavy (napari, Qt, torch): imported once the arguments are parsed, so --help and errors are instant.
    import napari

    from ._qt.widget import OVSAMWidget
    from ._sample_data import sample_2d, sample_stack

    viewer = napari.Viewer(title="napari-ovsam")
    for data, kwargs, _ in sample_stack() if args.sample == "stack" else sample_2d():
        viewer.add_image(data, **kwargs)
    widget = OVSAMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="OV-SAM Annotator", area="right")
    widget.load_model(args.model)
    napari.run()


if __name__ == "__main__":
    main()
