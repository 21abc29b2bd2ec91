"""The plugin's example bookkeeping: every committed object's features kept with its labels, examples
learnt from commits, renames and reviews, undone with their commit, synced into the predictor, persisted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from session_fakes import disk, make_session

from napari_ovsam._writer import write_coco
from napari_ovsam.coco_layers import coco_layer_data
from napari_ovsam.examples import LabelExamples, class_counts, foreign_count, forget_class
from napari_ovsam.examples_files import layer_examples, load_examples, save_examples, side_file
from napari_ovsam.session import AnnotationSession
from ovsam_model import OVSAMPredictor, build_ovsam
from ovsam_model.data.synthetic_images import ALL_CLASS_NAMES, generate_image
from ovsam_model.vocabulary import DEMO_CLASSES

CENTRES = ((20, 20), (44, 40), (20, 48))  # (row, col) of the three disks of `blobs`


def blobs(value_step=0):
    """A uint16 64x64 image: three bright disks of radius 8 on a noisy background."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (64, 64))
    for i, centre in enumerate(CENTRES):
        image[disk(image.shape, centre, 8)] += 600 + value_step * i
    return image.astype(np.uint16)


def boxes_on(*centres, half=11):
    """Shapes-layer rectangles (row, col corners) around disks."""
    return [
        np.array(
            [[r - half, c - half], [r - half, c + half], [r + half, c + half], [r + half, c - half]], float
        )
        for r, c in centres
    ]


def commit_boxes(session, *centres, slice_index=()):
    session.ensure_embedding(slice_index)
    rects = boxes_on(*centres)
    results = session.segment(
        np.zeros((0, 2)), np.zeros(0, bool), rects, ["rectangle"] * len(rects), slice_index
    )
    return session.commit(results)


@pytest.fixture
def tiny_session(tiny_model):
    session = AnnotationSession(OVSAMPredictor(tiny_model))
    session.set_vocabulary(list(DEMO_CLASSES))
    session.set_image(blobs())
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    return session


def names_of(session):
    return dict(zip(session.target.features["label_id"], session.target.features["class_name"]))


def test_mark_reviewed_sets_only_the_reviewed_column():
    session = make_session(np.where(blobs() > 400, 10, 0).astype(np.uint16))  # the fake predictor's objects
    commit_boxes(session, CENTRES[0])
    before = session.target.features.copy()
    session.mark_reviewed(1)
    after = session.target.features
    assert list(after["reviewed"]) == [True]
    assert list(after["class_name"]) == list(before["class_name"])
    session.mark_reviewed(1, False)
    assert not session.target.features["reviewed"].any()
    with pytest.raises(ValueError, match="No object with label id 9"):
        session.mark_reviewed(9)


def test_commit_keeps_features_and_teaches_the_predictor_and_its_copies(tiny_session):
    session = tiny_session
    group = commit_boxes(session, *CENTRES[:2])
    book = session.target.examples
    assert set(book.vectors) == {(1, ()), (2, ())} and book.learnt == {1, 2}
    width = session.predictor.examples.features.shape[1]
    assert all(
        v.values.shape == (width,) and v.model == session.predictor.model_fingerprint
        for v in book.vectors.values()
    )
    assert group.example_keys == [(1, ()), (2, ())]
    examples = session.predictor.examples
    assert list(examples.class_names) == [names_of(session)[1], names_of(session)[2]]
    assert session.job_predictor().examples is examples  # worker copies name from the same examples
    # the feature vector is the painted mask's: the same as computing it on the image now
    session.restore_embedding(())
    np.testing.assert_allclose(
        book.vectors[(1, ())].values,
        session.predictor.example_features(session.target.labels == 1)[0],
        rtol=1e-5,
    )


def test_rename_pick_and_review_follow_the_class_and_unknown_is_no_example(tiny_session):
    session = tiny_session
    commit_boxes(session, *CENTRES[:2])
    session.rename(1, "mitotic")
    assert "mitotic" in session.predictor.examples.class_names
    assert "mitotic" in session.predictor.class_names  # an example-only class the model now names
    session.rename(2, "unknown")
    assert list(session.predictor.examples.class_names) == ["mitotic"]
    assert [r for r in class_counts(session) if r[0] == "mitotic"] == [("mitotic", 1, "examples")]


def test_undo_takes_back_the_examples_of_its_commit_only(tiny_session):
    session = tiny_session
    commit_boxes(session, CENTRES[0])
    commit_boxes(session, CENTRES[1])
    session.rename(1, "mitotic")
    assert len(session.predictor.examples) == 2
    session.undo()
    assert set(session.target.examples.vectors) == {(1, ())} and session.target.examples.learnt == {1}
    assert list(session.predictor.examples.class_names) == ["mitotic"]
    session.undo()
    assert len(session.target.examples) == 0 and len(session.predictor.examples) == 0


def test_learning_off_keeps_features_but_makes_no_examples_until_reviewed(tiny_session):
    session = tiny_session
    session.teaching.learn = False
    commit_boxes(session, *CENTRES[:2])
    assert len(session.target.examples.vectors) == 2 and not session.target.examples.learnt
    session.rename(1, "mitotic")
    assert len(session.predictor.examples) == 0
    session.teaching.learn = True
    session.mark_reviewed(2)
    assert session.target.examples.learnt == {2} and len(session.predictor.examples) == 1


def test_mark_reviewed_computes_the_features_of_an_object_committed_without(tiny_session):
    """Labels from elsewhere (a file, a brush) have no features yet: reviewing one computes them."""
    session = tiny_session
    labels = np.zeros(session.labels_shape, np.uint32)
    labels[disk(labels.shape, CENTRES[2], 8)] = 7
    features = {"label_id": [7], "class_name": ["ring"], "score": [0.5], "iou": [0.5]}
    session.attach_labels(labels, features)
    session.ensure_embedding(())
    session.mark_reviewed(7)
    assert set(session.target.examples.vectors) == {(7, ())}
    assert list(session.predictor.examples.class_names) == ["ring"]


def test_commit_class_names_the_next_commits_and_marks_them_reviewed(tiny_session):
    session = tiny_session
    session.teaching.add_class("mitotic", known=session.vocabulary.names)
    assert class_counts(session)[-1] == ("mitotic", 0, "added")
    session.teaching.set_commit_class("mitotic")
    commit_boxes(session, *CENTRES[:2])
    table = session.target.features
    assert list(table["class_name"]) == ["mitotic", "mitotic"] and table["reviewed"].all()
    assert [r for r in class_counts(session) if r[0] == "mitotic"] == [("mitotic", 2, "examples")]
    assert forget_class(session, "mitotic") == 2
    assert len(session.predictor.examples) == 0 and session.teaching.commit_class is None
    assert list(session.target.features["class_name"]) == ["mitotic", "mitotic"]  # names are the user's


@pytest.mark.parametrize(
    "name, message",
    [("", "empty"), ("  ", "empty"), ("Nucleus", "already"), ("unknown", "nothing fits"), ("a, b", "comma")],
)
def test_adding_an_empty_or_duplicate_class_is_refused(tiny_session, name, message):
    with pytest.raises(ValueError, match=message):
        tiny_session.teaching.add_class(name, known=tiny_session.vocabulary.names)
    assert tiny_session.teaching.added == []


def test_examples_persist_next_to_the_exported_coco_and_come_back(tiny_session, tmp_path):
    session = tiny_session
    commit_boxes(session, *CENTRES[:2])
    session.rename(2, "mitotic")
    target = session.target
    attributes = {
        "name": "cells",
        "features": target.features,
        "metadata": {"ovsam": {"examples": target.examples}},
    }
    (path,) = write_coco(str(tmp_path / "cells.json"), target.labels, attributes)
    assert side_file(path) == tmp_path / "cells.examples.safetensors" and side_file(path).is_file()
    entry = json.loads((tmp_path / "cells.json").read_text())["ovsam"]["examples"]
    assert entry == {"file": "cells.examples.safetensors", "objects": [[1, []], [2, []]]}

    (layer,) = coco_layer_data(
        json.loads((tmp_path / "cells.json").read_text()), str(tmp_path / "cells.json")
    )
    book, problem = layer_examples(layer[1]["metadata"])
    assert problem is None and book.learnt == {1, 2}
    for key, vector in target.examples.vectors.items():
        np.testing.assert_array_equal(book.vectors[key].values, vector.values)
    # into another session: the reopened labels name from the same examples
    other = AnnotationSession(OVSAMPredictor(session.predictor.model))
    other.set_vocabulary(list(DEMO_CLASSES))
    other.set_image(blobs())
    reopened = other.attach_labels(layer[0], layer[1]["features"])
    reopened.examples = book
    other.sync_examples()
    assert list(other.predictor.examples.class_names) == list(session.predictor.examples.class_names)


def test_save_and_load_examples_into_another_image(tiny_session, tmp_path):
    session = tiny_session
    commit_boxes(session, *CENTRES[:2])
    assert save_examples(session, tmp_path / "taught.examples.safetensors") == 2
    session.set_image(blobs(value_step=50))
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    assert load_examples(session, tmp_path / "taught.examples.safetensors") == 2
    assert len(session.predictor.examples) == 4  # both images' examples
    assert len(session.target.examples.loaded) == 1
    with pytest.raises(ValueError, match="loaded into these labels already"):
        load_examples(session, tmp_path / "taught.examples.safetensors")
    assert len(session.predictor.examples) == 4


def test_loading_another_models_or_a_corrupted_file_is_refused_and_changes_nothing(tiny_session, tmp_path):
    session = tiny_session
    commit_boxes(session, *CENTRES[:2])
    torch.manual_seed(1)
    other = AnnotationSession(OVSAMPredictor(build_ovsam("tiny", device="cpu")))
    other.set_vocabulary(list(DEMO_CLASSES))
    other.set_image(blobs())
    other.attach_labels(np.zeros(other.labels_shape, np.uint32))
    commit_boxes(other, CENTRES[0])
    save_examples(other, tmp_path / "other.examples.safetensors")
    before = len(session.predictor.examples)
    with pytest.raises(ValueError, match="another model"):
        load_examples(session, tmp_path / "other.examples.safetensors")
    broken = tmp_path / "broken.examples.safetensors"
    broken.write_bytes((tmp_path / "other.examples.safetensors").read_bytes()[:-7])
    with pytest.raises(ValueError, match="corrupted|not a readable"):
        load_examples(session, broken)
    assert len(session.predictor.examples) == before and not session.target.examples.loaded


def test_a_layer_whose_examples_file_is_missing_says_so():
    book, problem = layer_examples(
        {
            "ovsam": {
                "examples": {"file": "gone.examples.safetensors", "objects": []},
                "source_path": "/nowhere/x.json",
            }
        }
    )
    assert book is None and "were not loaded" in problem and "No examples file" in problem
    assert layer_examples({"ovsam": {}}) == (None, None)
    fresh = LabelExamples()
    assert layer_examples({"ovsam": {"examples": fresh}}) == (fresh, None)


def true_boxes(masks):
    """Shapes-layer rectangles one pixel around each true mask."""
    out = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min() - 1, rows.max() + 1, cols.min() - 1, cols.max() + 1
        out.append(np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float))
    return out


def test_demo_model_names_a_class_it_was_taught_by_renames_only():
    """The closed-vocabulary demo model never saw a dumbbell: after the user committed three images and
    corrected the names, a dumbbell on a new image is called a dumbbell."""
    session = AnnotationSession(OVSAMPredictor(build_ovsam("demo")))
    session.set_vocabulary(list(DEMO_CLASSES))
    assert "dumbbell" not in session.predictor.class_names
    for seed in (0, 1, 2, 7):
        picture = generate_image(np.random.default_rng(seed), 256, (10, 15), extra_classes=True)
        session.set_image(picture.image)
        session.attach_labels(np.zeros(session.labels_shape, np.uint32))
        session.ensure_embedding(())
        rects = true_boxes(picture.masks)
        results = session.segment(np.zeros((0, 2)), np.zeros(0, bool), rects, ["rectangle"] * len(rects), ())
        truth = [ALL_CLASS_NAMES[c] for c in picture.labels]
        if seed == 7:  # a new image
            break
        group = session.commit(results)
        for label_id, name in zip(group.label_ids, truth):
            session.rename(label_id, name)
    assert session.predictor.examples.counts()["dumbbell"] == 8
    named = [n for t, n in zip(truth, results.class_names) if t == "dumbbell"]
    assert len(named) == 4 and named.count("dumbbell") >= 3, named


def test_examples_of_another_model_are_kept_unused_and_come_back_with_it(tiny_session):
    session = tiny_session
    commit_boxes(session, *CENTRES[:2])
    first = session.predictor
    torch.manual_seed(3)
    session.set_predictor(OVSAMPredictor(build_ovsam("tiny", device="cpu")))
    session.set_vocabulary(list(DEMO_CLASSES))
    assert len(session.predictor.examples) == 0 and foreign_count(session) == 2
    assert sum(c for _, c, _ in class_counts(session)) == 0
    session.ensure_embedding(())
    session.mark_reviewed(1)  # reviewed under this model: its features are computed for it
    assert len(session.predictor.examples) == 1
    session.set_predictor(first)
    assert len(session.predictor.examples) == 1 and foreign_count(session) == 1  # 1's are the new model's now


def test_stack_examples_are_kept_per_slice(tiny_model):
    stack = np.stack([blobs(value_step=z * 10) for z in range(3)])
    session = AnnotationSession(OVSAMPredictor(tiny_model))
    session.set_vocabulary(list(DEMO_CLASSES))
    session.set_image(stack)
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    session.ensure_embedding((2,))
    rects = [np.array([[2, *p] for p in r]) for r in boxes_on(CENTRES[0])]
    group = session.commit(session.segment(np.zeros((0, 3)), np.zeros(0, bool), rects, ["rectangle"], (2,)))
    assert group.example_keys == [(1, (2,))] and set(session.target.examples.vectors) == {(1, (2,))}
    assert len(session.predictor.examples) == 1


def test_a_name_with_synonyms_teaches_its_first_one(tiny_session):
    session = tiny_session
    commit_boxes(session, CENTRES[0])
    session.rename(1, "mitotic cell,  dividing cell")
    assert list(session.predictor.examples.class_names) == ["mitotic cell"]


def test_objects_the_predictor_cannot_measure_are_committed_without_features(tiny_session, monkeypatch):
    session = tiny_session

    def refuse(masks):
        raise ValueError("Mask 0 (of 1) is empty")

    monkeypatch.setattr(session.predictor, "example_features", refuse)
    group = commit_boxes(session, CENTRES[0])
    assert group.label_ids == (1,) and (session.target.labels == 1).any()  # the commit stands
    assert not session.target.examples.vectors and len(session.predictor.examples) == 0
    assert "could not be measured as examples: Mask 0 (of 1) is empty" in session.teaching.problem
    monkeypatch.undo()
    commit_boxes(session, CENTRES[1])
    assert session.teaching.problem == "" and len(session.predictor.examples) == 1
