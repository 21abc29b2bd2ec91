"""The annotation session on a served model (``RemotePredictor`` against a real server on 127.0.0.1, ``tiny``
model): the same labels and names as on the local predictor, through the embedding cache (which holds
references), precompute, segment everything and a server restart in the middle of a stack."""

from __future__ import annotations

import numpy as np
import pytest
from session_fakes import disk

pytest.importorskip("fastapi")

from napari_ovsam.automatic import AutomaticSettings, iter_segment_everything  # noqa: E402
from napari_ovsam.session import AnnotationSession  # noqa: E402
from napari_ovsam.tiles import drain  # noqa: E402
from ovsam_model.predictor import OVSAMPredictor  # noqa: E402
from ovsam_model.remote import RemotePredictor  # noqa: E402
from ovsam_model.serve.app import create_app  # noqa: E402
from ovsam_model.serve.engine import Engine  # noqa: E402
from ovsam_model.serve.local import free_port, serve_in_thread  # noqa: E402

CLASSES = ["nucleus", "rod, bacterium", "ring"]


@pytest.fixture
def stack() -> np.ndarray:
    data = np.zeros((3, 64, 64), np.uint16)
    for z in range(3):
        data[z, -1, -1] = z + 1
        data[z][disk((64, 64), (20, 20 + z), 8)] = 1000
        data[z][disk((64, 64), (44, 40), 9)] = 2000
    return data


def session_on(predictor, stack, fingerprint=None) -> AnnotationSession:
    session = AnnotationSession()
    session.set_predictor(predictor, fingerprint)
    session.set_vocabulary(CLASSES, text_embeddings=session.encode_vocabulary(CLASSES))
    session.set_image(stack)
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    return session


def annotate(session: AnnotationSession, z: int) -> None:
    session.ensure_embedding((z,))
    rect = np.array([[z, 33, 29], [z, 33, 52], [z, 56, 52], [z, 56, 29]], float)
    results = session.segment(
        np.array([[z, 20.0, 20.0 + z]]), [True], [rect], ["rectangle"], slice_index=(z,)
    )
    session.commit(results)


def test_a_session_on_a_served_model_matches_the_local_one(tiny_model, stack) -> None:
    mine = session_on(OVSAMPredictor(tiny_model), stack)
    port = free_port()
    with serve_in_thread(create_app(Engine(OVSAMPredictor(tiny_model))), port=port) as url:
        remote = RemotePredictor(url, backoff=0.05)
        served = session_on(remote, stack)
        assert served.encode_vocabulary(CLASSES) is None  # the server encodes the text
        assert served.fingerprint == remote.fingerprint and served.fingerprint.startswith("remote-")
        annotate(served, 0)
        list(served.iter_precompute((0,)))  # the other slices, uploaded and encoded by the server
        key = served._keys[(1,)]
        assert set(served.cache.get(key)) >= {"remote_image", "original_size"}  # a reference, not arrays
    annotate(mine, 0)
    with serve_in_thread(create_app(Engine(OVSAMPredictor(tiny_model))), port=port):  # restarted: empty
        annotate(served, 1)  # the cached reference is stale: the client sends the slice again
        annotate(mine, 1)
        settings = AutomaticSettings(points_per_side=6, min_stability=0.0, min_score=0.0, max_background=1.0)
        proposals = drain(iter_segment_everything(served, [(2,)], settings=settings))
        expected = drain(iter_segment_everything(mine, [(2,)], settings=settings))
    np.testing.assert_array_equal(served.target.labels, mine.target.labels)
    assert served.target.labels[:2].any()
    assert list(served.target.features["class_name"]) == list(mine.target.features["class_name"])
    got, want = proposals.results.get((2,)), expected.results.get((2,))
    assert (got is None) == (want is None)
    if want is not None:
        assert got.class_names == want.class_names
        np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(want.masks))


def test_propagation_through_a_stack_on_a_served_model_matches_the_local_one(stack) -> None:
    from napari_ovsam.propagation import PropagationSettings
    from ovsam_model.build import build_ovsam

    demo = build_ovsam("demo", device="cpu")  # the tiny model's random masks have no predicted IoU to follow
    settings = PropagationSettings(min_iou=0.0, min_overlap=0.0)
    mine = session_on(OVSAMPredictor(demo), stack)
    steps = {}
    with serve_in_thread(create_app(Engine(OVSAMPredictor(demo)))) as url:
        served = session_on(RemotePredictor(url), stack)
        for name, session in (("mine", mine), ("served", served)):
            annotate(session, 1)
            ids = [int(i) for i in np.unique(session.target.labels[1]) if i]
            steps[name] = [(s.label_id, s.slice_index, s.painted, s.class_name)
                           for s in session.iter_propagate(ids, (1,), settings)]  # fmt: skip
    assert steps["served"] == steps["mine"] and any(painted for _, _, painted, _ in steps["mine"])
    np.testing.assert_array_equal(served.target.labels, mine.target.labels)
    assert served.target.labels[[0, 2]].any()  # it went through the stack
