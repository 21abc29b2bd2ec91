"""``python -m ovsam_model.annotate`` in one process: the COCO file and label array it writes, resuming after
an interruption or a crash (the result equals an uninterrupted run's), failed slices, overwriting, folders,
``--classes`` and ``--vocabulary``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from annotate_helpers import FAST, break_chunk, read_json, repair_chunk, synthetic_stack
from PIL import Image
from pycocotools import mask as mask_utils

from ovsam_model.annotate import cli, output
from ovsam_model.annotate.cli import main
from ovsam_model.automatic import AutomaticAnnotator, coco_categories
from ovsam_model.build import build_ovsam
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.vocabulary import DEMO_CLASSES


def _interrupt_at(monkeypatch, index: int, error: BaseException) -> list[int]:
    """Make slice ``index`` raise ``error``; returns the list of slices annotated."""
    real, calls = cli.annotate_slice, []

    def annotate(ref, **kwargs):
        calls.append(ref.index)
        if ref.index == index:
            raise error
        return real(ref, **kwargs)

    monkeypatch.setattr(cli, "annotate_slice", annotate)
    return calls


def _count_calls(monkeypatch) -> list[int]:
    return _interrupt_at(monkeypatch, -1, RuntimeError())


@pytest.fixture
def reference(stack_tif, tmp_path):
    """An uninterrupted run of the stack: (COCO dict, labels array)."""
    out = tmp_path / "reference.json"
    assert main([str(stack_tif), "--out", str(out), "--labels-out", str(tmp_path / "ref.zarr"), *FAST]) == 0
    return read_json(out), zarr.open_array(str(tmp_path / "ref.zarr"), mode="r")[:]


def test_a_stack_gives_one_coco_file_and_a_label_array(stack_tif, tmp_path, capsys):
    out, labels_out = tmp_path / "annotations.json", tmp_path / "labels.zarr"
    assert main([str(stack_tif), "--out", str(out), "--labels-out", str(labels_out), *FAST]) == 0
    coco = read_json(out)
    assert [(i["id"], i["file_name"], i["slice_index"], i["height"], i["width"]) for i in coco["images"]] == [
        (z + 1, "stack.tif", z, 96, 96) for z in range(3)
    ]
    assert all(i["path"] == str(stack_tif.resolve()) for i in coco["images"])
    assert coco["categories"] == coco_categories(DEMO_CLASSES)
    annotations = coco["annotations"]
    assert len(annotations) > 3 and [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    assert [a["image_id"] for a in annotations] == sorted(a["image_id"] for a in annotations)
    labels = zarr.open_array(str(labels_out), mode="r")
    assert labels.shape == (3, 96, 96) and labels.dtype == np.int32
    for a in annotations:  # each RLE mask is its label in the label array
        mask = mask_utils.decode(a["segmentation"]).astype(bool)
        np.testing.assert_array_equal(mask, labels[a["image_id"] - 1] == a["label_id"])
        assert a["class_name"] in DEMO_CLASSES and a["category_id"] == DEMO_CLASSES.index(a["class_name"]) + 1
    assert not output.journal_path(out).exists()
    assert (
        f"3 slice(s) done (0 from an earlier run), {len(annotations)} object(s) found"
        in capsys.readouterr().out
    )


def test_the_annotations_are_the_annotators(stack_tif, tmp_path):
    """The command line passes its settings on: slice 1's objects are AutomaticAnnotator's own."""
    out = tmp_path / "a.json"
    assert main([str(stack_tif), "--out", str(out), "--min-area", "20", "--nms-iou", "0.4", *FAST]) == 0
    predictor = OVSAMPredictor(build_ovsam("demo", device="cpu"))
    annotator = AutomaticAnnotator(
        predictor, points_per_side=4, min_iou=0, min_stability=0, min_area=20, nms_iou=0.4
    )
    expected = annotator.annotate(synthetic_stack()[1]).to_coco(2)
    found = [{**a, "id": 0} for a in read_json(out)["annotations"] if a["image_id"] == 2]
    assert found == [{**a, "id": 0} for a in expected] and found


def test_an_interrupted_run_resumes_to_the_same_result(stack_tif, tmp_path, reference, monkeypatch, capsys):
    out, labels_out = tmp_path / "a.json", tmp_path / "labels.zarr"
    argv = [str(stack_tif), "--out", str(out), "--labels-out", str(labels_out), *FAST]
    _interrupt_at(monkeypatch, 2, KeyboardInterrupt())
    assert main(argv) == 130
    assert "2 of 3 slice(s) done" in capsys.readouterr().out
    assert not out.exists() and len(output.journal_path(out).read_text().splitlines()) == 3  # header + 2
    monkeypatch.undo()
    calls = _count_calls(monkeypatch)
    assert main(argv) == 0
    assert calls == [2]  # only the slice left
    assert "(2 from an earlier run)" in capsys.readouterr().out
    assert read_json(out) == reference[0]
    np.testing.assert_array_equal(zarr.open_array(str(labels_out), mode="r")[:], reference[1])


def test_a_journal_cut_short_by_a_crash_resumes(stack_tif, tmp_path, reference, monkeypatch):
    out = tmp_path / "a.json"
    argv = [str(stack_tif), "--out", str(out), "--labels-out", str(tmp_path / "l.zarr"), *FAST]
    _interrupt_at(monkeypatch, 1, KeyboardInterrupt())
    assert main(argv) == 130
    with open(output.journal_path(out), "a", encoding="utf-8") as journal:
        journal.write('{"index": 1, "annotations": [{"id": 1, "segm')  # killed while writing slice 1
    monkeypatch.undo()
    calls = _count_calls(monkeypatch)
    assert main(argv) == 0
    assert calls == [1, 2] and read_json(out) == reference[0]


def test_a_journal_of_other_options_is_refused(stack_tif, tmp_path, monkeypatch, capsys):
    out = tmp_path / "a.json"
    _interrupt_at(monkeypatch, 1, KeyboardInterrupt())
    assert main([str(stack_tif), "--out", str(out), *FAST]) == 130
    journal = output.journal_path(out).read_text()
    with pytest.raises(SystemExit) as info:
        main([str(stack_tif), "--out", str(out), *FAST, "--min-area", "5"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "other options (settings differ)" in err and "--overwrite" in err
    assert output.journal_path(out).read_text() == journal


def test_a_failed_slice_is_reported_kept_out_and_run_again(stack_zarr, tmp_path, capsys):
    out = tmp_path / "a.json"
    argv = [str(stack_zarr), "--out", str(out), *FAST]
    reference = tmp_path / "reference.json"
    assert main([str(stack_zarr), "--out", str(reference), *FAST]) == 0
    capsys.readouterr()
    good = break_chunk(stack_zarr, 1)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert f"slice failed: {stack_zarr.resolve()} slice 1:" in captured.err
    assert "2 of 3 slice(s) done, 1 failed" in captured.out and not out.exists()
    repair_chunk(stack_zarr, 1, good)
    assert main(argv) == 0
    assert "(2 from an earlier run)" in capsys.readouterr().out
    coco, expected = read_json(out), read_json(reference)
    assert coco["annotations"] == expected["annotations"] and coco["images"] == expected["images"]


def test_overwrite_replaces_only_this_tools_outputs(stack_tif, tmp_path):
    out, labels_out = tmp_path / "a.json", tmp_path / "labels.zarr"
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    argv = [str(stack_tif), "--out", str(out), "--labels-out", str(labels_out), *FAST]
    assert main(argv) == 0
    first = out.read_text()
    zarr.open_array(str(labels_out), mode="r+")[0] = 7
    assert main([*argv, "--overwrite"]) == 0
    assert out.read_text() == first and 7 not in zarr.open_array(str(labels_out), mode="r")[0]
    assert notes.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.json", "labels.zarr", "notes.txt", "stack.tif"
    ]  # fmt: skip


def test_a_folder_gives_its_images_sorted(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    images = synthetic_stack(2)
    for name, image in zip(("b.png", "a.png"), images):
        Image.fromarray((image >> 8).astype(np.uint8)).save(folder / name)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "a.json"
    assert main([str(folder), "--out", str(out), *FAST]) == 0
    coco = read_json(out)
    assert [(i["id"], i["file_name"]) for i in coco["images"]] == [(1, "images/a.png"), (2, "images/b.png")]
    assert all("slice_index" not in i for i in coco["images"])


def test_classes_and_a_vocabulary_file(stack_tif, tmp_path):
    out = tmp_path / "a.json"
    assert main([str(stack_tif), "--out", str(out), "--classes", "nucleus", *FAST]) == 0
    coco = read_json(out)
    assert coco["categories"] == coco_categories(DEMO_CLASSES) and coco["annotations"]
    assert {a["class_name"] for a in coco["annotations"]} == {"nucleus"}
    vocabulary = tmp_path / "classes.txt"
    vocabulary.write_text("# my classes\nblob, nucleus, cell\nrod\n")
    out2 = tmp_path / "b.json"
    assert main([str(stack_tif), "--out", str(out2), "--vocabulary", str(vocabulary), *FAST]) == 0
    coco = read_json(out2)
    assert [c["name"] for c in coco["categories"]] == ["blob", "rod"]
    assert {a["class_name"] for a in coco["annotations"]} <= {"blob", "rod"} and coco["annotations"]
    assert json.dumps(coco["info"]["classes"]) == '["blob", "rod"]'


def test_a_single_image_gives_a_2d_label_array(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, synthetic_stack(1)[0])
    labels_out: Path = tmp_path / "l.zarr"
    assert main([str(path), "--out", str(tmp_path / "a.json"), "--labels-out", str(labels_out), *FAST]) == 0
    labels = zarr.open_array(str(labels_out), mode="r")[:]
    coco = read_json(tmp_path / "a.json")
    assert labels.shape == (96, 96) and "slice_index" not in coco["images"][0]
    assert sorted(a["label_id"] for a in coco["annotations"]) == list(range(1, labels.max() + 1))
    assert labels.max() >= 1
