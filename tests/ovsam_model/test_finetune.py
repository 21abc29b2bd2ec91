"""Fine-tuning on a user's labels (``ovsam_model.finetune``): the training set built from label images, the
refusals, a short run on the tiny model in this process and in the background process, cancelling it, the
time budget, and new checkpoint names that never replace a file."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from ovsam_model.build import build_ovsam
from ovsam_model.checkpoint import save_checkpoint
from ovsam_model.data.synthetic_images import ALL_CLASS_NAMES, generate_image, image_rng
from ovsam_model.finetune import (
    AnnotatedImage,
    Cancelled,
    FinetuneOptions,
    build_finetune_set,
    finetune,
    run_in_process,
    write_coco,
)
from ovsam_model.finetune.run import leftovers, partial_name, save_new_checkpoint
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.vocabulary import Vocabulary

TINY_RUN = {"steps": 2, "batch_size": 2, "num_prompts": 4, "warmup_steps": 0, "threads": 1}


def _labels(*boxes: tuple[int, int, int, int], shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    """A label image with object i + 1 filling rows r0:r1, cols c0:c1 of ``boxes[i]``."""
    labels = np.zeros(shape, np.int32)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        labels[r0:r1, c0:c1] = i + 1
    return labels


def _synthetic(count: int, size: int = 128, seed: int = 0) -> list[AnnotatedImage]:
    """Synthetic images with the three extra classes mixed in, as label images with a name per label."""
    images = []
    for index in range(count):
        sample = generate_image(image_rng(seed, "train", index), size=size, objects_per_image=(6, 8),
                                extra_classes=True)  # fmt: skip
        labels = np.zeros(sample.image.shape, np.int32)
        for k, mask in enumerate(sample.masks):
            labels[mask] = k + 1
        names = {k + 1: ALL_CLASS_NAMES[c] for k, c in enumerate(sample.labels)}
        images.append(AnnotatedImage(sample.image, labels, names, source=f"synthetic {index}"))
    return images


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ the set
def test_names_come_per_label_and_unnamed_or_empty_labels_are_skipped() -> None:
    labels = _labels((0, 10, 0, 10), (0, 10, 20, 30), (20, 30, 0, 10), (20, 30, 20, 30))
    names = {1: "Crescent", 2: "nucleus", 3: "unknown", 5: "rod"}  # 4 has no name, 5 has no pixels
    image = AnnotatedImage(np.zeros((40, 60), np.uint16), labels, names)
    data = build_finetune_set(
        [image], base_vocabulary=Vocabulary(["nucleus, blob", "ring"]), min_per_class=1, min_objects=1,
        holdout_fraction=0.0,
    )  # fmt: skip
    assert data.classes.synonyms == [["nucleus", "blob"], ["ring"], ["Crescent"]]
    assert data.new_classes == ["Crescent"]
    assert sorted((o.label_id, data.classes.names[o.label]) for o in data.train) == [
        (1, "Crescent"),
        (2, "nucleus"),
    ]
    assert data.skipped == {"unnamed": 2, "empty": 1}


def test_a_known_name_in_other_case_is_the_known_class() -> None:
    image = AnnotatedImage(np.zeros((40, 60)), _labels((0, 10, 0, 10)), {1: "  Nucleus "})
    data = build_finetune_set([image], base_vocabulary=Vocabulary(["nucleus"]), min_per_class=1,
                              min_objects=1, holdout_fraction=0.0)  # fmt: skip
    assert data.classes.names == ["nucleus"] and data.new_classes == []


def test_the_split_holds_out_a_share_of_every_class() -> None:
    data = build_finetune_set(_synthetic(6), holdout_fraction=0.2, min_per_class=1, min_objects=1)
    held = {data.classes.names[o.label] for o in data.heldout}
    assert held == set(data.counts())  # at least one of each class
    for name, count in data.counts().items():
        n_held = sum(data.classes.names[o.label] == name for o in data.heldout)
        assert n_held == max(1, round(0.2 * count))
    assert not {(o.image, o.label_id) for o in data.heldout} & {(o.image, o.label_id) for o in data.train}


def test_coco_file_holds_only_the_training_objects(tmp_path: Path) -> None:
    data = build_finetune_set(_synthetic(3), min_per_class=1, min_objects=1)
    path = write_coco(data, tmp_path, repeats=2)
    coco = json.loads(path.read_text())
    assert [c["name"] for c in coco["categories"]] == data.classes.names
    assert len(coco["annotations"]) == 2 * len(data.train)
    assert len(coco["images"]) == 2 * len({o.image for o in data.train})
    first = np.load(tmp_path / coco["images"][0]["file_name"])
    assert first.dtype == np.uint8 and first.shape == (128, 128, 3)


def test_large_images_train_on_tiles_at_native_resolution(tmp_path: Path) -> None:
    labels = _labels((10, 30, 10, 30), (200, 240, 250, 290), (100, 120, 150, 170), shape=(300, 400))
    image = AnnotatedImage(np.zeros((300, 400), np.uint16), labels, {1: "a", 2: "b", 3: "a"})
    data = build_finetune_set([image], min_per_class=1, min_objects=1, holdout_fraction=0.0)
    coco = json.loads(write_coco(data, tmp_path, model_size=128).read_text())  # tiled above 192 px
    assert all(max(i["height"], i["width"]) <= 128 for i in coco["images"])
    assert sorted(a["area"] for a in coco["annotations"]) == [400, 400, 1600]  # each object once, whole
    whole = json.loads(write_coco(data, tmp_path / "whole", model_size=512).read_text())
    assert [(i["height"], i["width"]) for i in whole["images"]] == [(300, 400)]


def test_too_few_objects_are_refused_with_how_many_more() -> None:
    labels = _labels((0, 10, 0, 10), (0, 10, 20, 30), (20, 30, 0, 10))
    image = AnnotatedImage(np.zeros((40, 60)), labels, {1: "crescent", 2: "crescent", 3: "rod"})
    with pytest.raises(ValueError) as error:
        build_finetune_set([image])
    message = str(error.value)
    assert "at least 5 named objects of each class" in message
    assert "'crescent' has 2 (commit 3 more)" in message and "'rod' has 1 (commit 4 more)" in message
    assert "at least 20 named objects in all: there are 3" in message


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        (
            AnnotatedImage(np.zeros((40, 61)), _labels((0, 10, 0, 10)), {1: "a"}),
            "of the same height and width",
        ),
        (AnnotatedImage(np.zeros((40, 60)), _labels((0, 10, 0, 10)).astype(float), {1: "a"}), "integer"),
        (AnnotatedImage(np.zeros((40, 60)), _labels((0, 10, 0, 10)), {1: "a, b"}), "holds a comma"),
    ],
)
def test_bad_annotations_are_refused(image: AnnotatedImage, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_finetune_set([image], min_per_class=1, min_objects=1)


def test_no_images_and_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit some named objects first"):
        build_finetune_set([])
    with pytest.raises(ValueError, match="steps must be at least 1.*batch_size must be at least 1"):
        FinetuneOptions(steps=0, batch_size=0).check()


# ---------------------------------------------------------------------------------------------- new names
def test_new_checkpoints_never_replace_a_file(tmp_path: Path) -> None:
    (tmp_path / "tiny_finetuned.safetensors").write_bytes(b"mine")
    path = save_new_checkpoint(lambda p: p.write_bytes(b"new"), tmp_path, "tiny_finetuned")
    assert path.name == "tiny_finetuned_2.safetensors" and path.read_bytes() == b"new"
    assert (tmp_path / "tiny_finetuned.safetensors").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_finetuned.safetensors", path.name]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_new_checkpoint(fail, tmp_path, "tiny_finetuned")
    assert list(tmp_path.iterdir()) == []
    stray = tmp_path / f".{partial_name('tiny_finetuned', 123)}.abc.tmp"
    stray.write_bytes(b"")
    assert leftovers(tmp_path, "tiny_finetuned", 123) == [stray]


# ------------------------------------------------------------------------------------------------ runs
@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    """The tiny model saved as the user's own checkpoint (the original that must stay as it is)."""
    torch.manual_seed(1)
    return save_checkpoint(build_ovsam("tiny", device="cpu"), tmp_path / "mine.safetensors")


@pytest.fixture
def tiny_set() -> object:
    base = Vocabulary(list(ALL_CLASS_NAMES[:4]))  # the demo classes; the extra ones are new
    return build_finetune_set(_synthetic(4), base_vocabulary=base, min_per_class=1, min_objects=1)


def test_a_short_run_saves_a_new_checkpoint_that_names_every_class(
    tmp_path: Path, tiny_source: Path, tiny_set
) -> None:
    original = _sha(tiny_source)
    events: list[dict] = []
    options = FinetuneOptions(**TINY_RUN)
    result = finetune(
        tiny_set, tiny_source, options, tmp_path, work_dir=tmp_path / "work", report=events.append
    )
    assert result.checkpoint == tmp_path / "tiny_finetuned.safetensors" and result.steps == 2
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert all(isinstance(e["loss"], float) for e in events if e["event"] == "step")
    assert [e["when"] for e in events if e["event"] == "scores"] == ["before", "after"]
    assert result.before.count == result.after.count == len(tiny_set.heldout)
    model = build_ovsam(result.checkpoint, device="cpu")
    extras = model.checkpoint_extras
    assert extras.vocabulary.names == tiny_set.classes.names
    assert set(tiny_set.new_classes) == {"crescent", "dumbbell", "speckled"} & set(tiny_set.counts())
    assert extras.metadata["finetune"]["after"] == result.after.to_dict()
    assert result.after_text_only is not None and result.after_text_only.count == result.after.count
    assert result.examples == tmp_path / "tiny_finetuned.examples.safetensors"
    assert OVSAMPredictor(model).load_examples(result.examples) == len(tiny_set.train)  # the new model's
    with pytest.raises(ValueError):
        OVSAMPredictor(build_ovsam(tiny_source, device="cpu")).load_examples(result.examples)
    assert _sha(tiny_source) == original
    trained = dict(model.named_parameters())
    start = dict(build_ovsam(tiny_source, device="cpu").named_parameters())
    changed = {k.split(".")[0] for k in trained if not torch.equal(trained[k], start[k])}
    assert {"mask_decoder", "region_head"} <= changed <= {"mask_decoder", "fpn", "region_head", "label_mlp"}


def test_the_time_budget_keeps_what_was_learnt(tmp_path: Path, tiny_source: Path, tiny_set) -> None:
    options = FinetuneOptions(**{**TINY_RUN, "steps": 50, "max_seconds": 1e-6})
    result = finetune(tiny_set, tiny_source, options, tmp_path, work_dir=tmp_path / "work")
    assert result.steps == 1
    trained = dict(build_ovsam(result.checkpoint, device="cpu").named_parameters())
    start = dict(build_ovsam(tiny_source, device="cpu").named_parameters())
    changed = [k for k in trained if not torch.equal(trained[k], start[k])]
    assert changed and all(
        k.startswith(("mask_decoder.", "fpn.", "region_head.", "label_mlp.")) for k in changed
    )


def test_stopping_in_process_saves_nothing(tmp_path: Path, tiny_source: Path, tiny_set) -> None:
    steps: list[int] = []
    options = FinetuneOptions(**{**TINY_RUN, "steps": 50})
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(Cancelled):
        finetune(tiny_set, tiny_source, options, output, work_dir=tmp_path / "work",
                 report=lambda e: steps.append(e.get("step", 0)), stop=lambda: max(steps, default=0) >= 2)  # fmt: skip
    assert max(steps) == 2 and list(output.iterdir()) == []


@pytest.mark.slow
def test_background_process_reports_progress_and_returns_the_new_checkpoint(
    tmp_path: Path, tiny_source: Path, tiny_set
) -> None:
    model = build_ovsam(tiny_source, device="cpu")
    (tmp_path / "tiny_finetuned.safetensors").write_bytes(b"an earlier result")
    run = run_in_process(tiny_set, model, FinetuneOptions(**TINY_RUN), tmp_path)
    events = []
    try:
        while True:
            events.append(next(run))
    except StopIteration as stop:
        result = stop.value
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert result.checkpoint == tmp_path / "tiny_finetuned_2.safetensors"
    assert (tmp_path / "tiny_finetuned.safetensors").read_bytes() == b"an earlier result"
    assert result.examples == tmp_path / "tiny_finetuned_2.examples.safetensors" and result.examples.is_file()
    assert (
        build_ovsam(result.checkpoint, device="cpu").checkpoint_extras.vocabulary.names
        == tiny_set.classes.names
    )
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_cancelling_the_process_midway_leaves_no_file(tmp_path: Path, tiny_source: Path, tiny_set) -> None:
    model = build_ovsam(tiny_source, device="cpu")
    output = tmp_path / "out"
    output.mkdir()
    run = run_in_process(tiny_set, model, FinetuneOptions(**{**TINY_RUN, "steps": 10_000}), output)
    event = next(run)
    while event["event"] != "step":
        event = next(run)
    run.close()  # what a worker's Cancel does
    assert multiprocessing.active_children() == []
    assert list(output.iterdir()) == []


def test_bad_output_folder_is_refused_before_any_process(tmp_path: Path, tiny_model, tiny_set) -> None:
    run = run_in_process(tiny_set, tiny_model, FinetuneOptions(**TINY_RUN), tmp_path / "missing")
    with pytest.raises(ValueError, match="is not a folder"):
        next(run)
