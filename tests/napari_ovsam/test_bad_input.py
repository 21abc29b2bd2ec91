"""Bad input to the plugin's public entry points: each row is (what is called, the message it must give).

The session (no viewer) answers with one ``ValueError`` (or ``RuntimeError`` when something is not there
yet) naming the problem and the fix; the widget shows the same in its status line and stays usable.
New entry points join the tables.
"""

from __future__ import annotations

import numpy as np
import pytest
from session_fakes import CLASSES, FakePredictor, make_session

from napari_ovsam import _layers
from napari_ovsam._qt.widget import OVSAMWidget
from napari_ovsam._sample_data import sample_2d, sample_stack
from napari_ovsam.propagation import PropagationSettings
from napari_ovsam.session import AnnotationSession

STACK = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
POINT = (np.array([[8.0, 8.0]]), np.array([True]), [], [])


def _session():
    return make_session(STACK)


SESSION_ROWS = [
    ("top_k 0", lambda: AnnotationSession(top_k=0), ValueError, "top_k must be a whole number >= 1"),
    (
        "threshold 2",
        lambda: AnnotationSession(unknown_threshold=2),
        ValueError,
        r"unknown_threshold .* \[0, 1\]",
    ),
    ("grouping rule", lambda: AnnotationSession(group="each"), ValueError, "group must be one of"),
    ("empty vocabulary", lambda: _session().set_vocabulary([]), ValueError, "vocabulary is empty"),
    (
        "empty text",
        lambda: _session().set_vocabulary("\n# only a comment\n"),
        ValueError,
        "vocabulary is empty",
    ),
    (
        "duplicate names",
        lambda: _session().set_vocabulary(["cell", "Cell"]),
        ValueError,
        "Duplicate class names",
    ),
    ("not a vocabulary", lambda: _session().set_vocabulary(5), ValueError, "A vocabulary is a list"),
    (
        "vocabulary, no model",
        lambda: AnnotationSession().set_vocabulary(CLASSES),
        RuntimeError,
        "load one first",
    ),
    ("image not an array", lambda: _session().set_image("cells.tif"), ValueError, "An image is an array"),
    ("1D image", lambda: _session().set_image(np.zeros(5)), ValueError, "two non-empty spatial axes"),
    ("empty image", lambda: _session().set_image(np.zeros((0, 4))), ValueError, "two non-empty spatial axes"),
    ("contrast low > high", lambda: _session().set_contrast_limits((5, 1)), ValueError, "finite low < high"),
    ("contrast NaN", lambda: _session().set_contrast_limits((0, np.nan)), ValueError, "finite low < high"),
    ("contrast one number", lambda: _session().set_contrast_limits(3), ValueError, "two numbers"),
    ("slice outside", lambda: _session().ensure_embedding((7,)), ValueError, "outside the image's slices"),
    ("slice of 2D", lambda: _session().ensure_embedding(()), ValueError, "does not fit an image"),
    (
        "segment, no image",
        lambda: AnnotationSession(FakePredictor()).segment(*POINT, ()),
        RuntimeError,
        "choose an image layer first",
    ),  # fmt: skip
    (
        "points without labels",
        lambda: _ready().segment(np.ones((2, 3)), np.ones(1), [], [], (0,)),
        ValueError,
        "2 points but 1 point labels",
    ),  # fmt: skip
    (
        "NaN point",
        lambda: _ready().segment(np.array([[0, np.nan, 1.0]]), [True], [], [], (0,)),
        ValueError,
        "finite numbers",
    ),  # fmt: skip
    (
        "labels of another shape",
        lambda: _session().attach_labels(np.zeros((3, 8, 8), np.uint32)),
        ValueError,
        r"Labels of shape \(3, 8, 8\) do not fit the image",
    ),  # fmt: skip
    ("float labels", lambda: _session().attach_labels(np.zeros(STACK.shape)), ValueError, "integer dtype"),
    ("commit, no labels", lambda: _no_labels().commit(_results()), RuntimeError, "No labels to write into"),
    ("commit mode", lambda: _ready().commit(_results(), mode="replace"), ValueError, "mode must be 'keep'"),
    ("rename unknown id", lambda: _ready().rename(42, "cell"), ValueError, "No object with label id 42"),
    (
        "propagate missing object",
        lambda: list(_ready().iter_propagate([9], (0,), PropagationSettings())),
        ValueError,
        "Object 9 is not on slice",
    ),  # fmt: skip
    (
        "precompute a 2D image",
        lambda: list(make_session(STACK[0]).iter_precompute(())),
        ValueError,
        "has no stack axis",
    ),  # fmt: skip
]


def _ready():
    session = _session()
    session.ensure_embedding((0,))
    return session


def _no_labels():
    session = AnnotationSession(FakePredictor())
    session.set_image(STACK)
    return session


def _results():
    session = _ready()
    return session.segment(np.array([[0, 8.0, 8.0]]), [True], [], [], slice_index=(0,))


@pytest.mark.parametrize(
    ("call", "error", "message"), [row[1:] for row in SESSION_ROWS], ids=[r[0] for r in SESSION_ROWS]
)
def test_session_refuses_bad_input_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------------------------- widget


def _stack_viewer(viewer):
    viewer.add_image(sample_stack()[0][0][:3, :64, :64], name="stack")


def _2d_viewer(viewer):
    data, attributes, _ = sample_2d()[0]
    viewer.add_image(data, **attributes)


def _small_2d_viewer(viewer):
    viewer.add_image(np.zeros((128, 128), np.uint16), name="small")  # encoded whole (not tiled)


def _no_image(viewer):
    return None


def _foreign_labels(viewer):
    """The user's own labels layer claims the image but has another shape: it is left alone."""
    _2d_viewer(viewer)
    viewer.add_labels(
        np.zeros((10, 10), np.uint32), name="mine", metadata={"ovsam": {"image_name": "ovsam sample 2D"}}
    )


def _commit_box(widget):
    widget.viewer.layers[_layers.BOXES].add_rectangles(
        np.array([[150, 30], [150, 100], [220, 100], [220, 30]], float)
    )
    return widget.commit()


WIDGET_ROWS = [
    (
        "empty vocabulary",
        _2d_viewer,
        lambda w: w.set_vocabulary("\n"),
        "The vocabulary is not valid: The vocabulary is empty",
    ),
    ("duplicate classes", _2d_viewer, lambda w: w.set_vocabulary("cell\ncell"), "Duplicate class names"),
    ("segment without an image", _no_image, lambda w: w.segment(), "Add or choose an image layer first."),
    ("commit without an image", _no_image, lambda w: w.commit(), "Add or choose an image layer first."),
    ("commit without prompts", _2d_viewer, lambda w: w.commit(), "Nothing to commit"),
    ("undo without commits", _2d_viewer, lambda w: w.undo(), "Nothing to undo."),
    ("propagate a 2D image", _2d_viewer, lambda w: w.propagate(), "The image is 2D"),
    ("precompute a 2D image", _small_2d_viewer, lambda w: w.precompute(), "The image is 2D"),
    ("propagate nothing", _stack_viewer, lambda w: w.propagate(), "Commit an object"),
    ("labels layer of another shape", _foreign_labels, _commit_box, "Committed 1 object(s): ids 1."),
]


@pytest.mark.gui
@pytest.mark.parametrize(
    ("setup", "call", "message"), [row[1:] for row in WIDGET_ROWS], ids=[r[0] for r in WIDGET_ROWS]
)
def test_widget_reports_bad_input_in_its_status_line(
    make_napari_viewer, qtbot, monkeypatch, setup, call, message
):
    from napari_ovsam._qt import status

    errors = []
    monkeypatch.setattr(status, "show_error", errors.append)
    viewer = make_napari_viewer()
    setup(viewer)
    widget = OVSAMWidget(viewer)
    widget._model_panel._device.setCurrentText("cpu")
    widget.load_model("tiny")
    qtbot.waitUntil(lambda: not widget.busy and not widget._embeddings.pending, timeout=30000)
    assert widget.session.predictor is not None, widget.status
    assert call(widget) is None or message.startswith("Committed")
    assert message in widget.status
    assert len(errors) == int("not valid" in message or "Duplicate" in message)  # one notification, or none
    if setup is _foreign_labels:
        assert not viewer.layers["mine"].data.any() and viewer.layers[_layers.LABELS].data.shape == (256, 256)
    widget.close()
    qtbot.waitUntil(lambda: not widget._jobs.jobs, timeout=30000)
