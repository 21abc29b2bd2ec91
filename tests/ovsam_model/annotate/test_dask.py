"""Batch annotation on a Dask cluster of 2 worker processes (one thread each, on the CPU): the result equals
the run in one process; a task that keeps failing is reported with its slice and run again by a rerun."""

from __future__ import annotations

import logging

import distributed
import numpy as np
import pytest
import zarr
from annotate_helpers import FAST, break_chunk, read_json, repair_chunk

from ovsam_model.annotate import work
from ovsam_model.annotate.cli import main

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    ) as local:
        yield local


def _has_model() -> bool:
    return work._CACHED["annotator"] is not None


def test_two_workers_give_the_single_process_result(stack_tif, tmp_path, cluster, capsys):
    here, there = tmp_path / "here.json", tmp_path / "there.json"
    assert main([str(stack_tif), "--out", str(here), "--labels-out", str(tmp_path / "here.zarr"), *FAST]) == 0
    argv = [str(stack_tif), "--out", str(there), "--labels-out", str(tmp_path / "there.zarr"), *FAST]
    assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    assert "3 slice(s) done" in capsys.readouterr().out
    assert read_json(there) == read_json(here) and read_json(here)["annotations"]
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "there.zarr"), mode="r")[:],
        zarr.open_array(str(tmp_path / "here.zarr"), mode="r")[:],
    )
    with distributed.Client(cluster) as client:  # the workers keep their model for the next run
        assert any(client.run(_has_model).values())


def test_a_failing_task_is_reported_with_its_slice(stack_zarr, tmp_path, cluster, capsys):
    reference, out = tmp_path / "reference.json", tmp_path / "a.json"
    assert main([str(stack_zarr), "--out", str(reference), *FAST]) == 0
    good = break_chunk(stack_zarr, 2)
    argv = [str(stack_zarr), "--out", str(out), *FAST, "--scheduler", cluster.scheduler_address]
    assert main([*argv, "--retries", "1"]) == 1
    captured = capsys.readouterr()
    assert f"slice failed: {stack_zarr.resolve()} slice 2:" in captured.err
    assert "2 of 3 slice(s) done, 1 failed" in captured.out and not out.exists()
    repair_chunk(stack_zarr, 2, good)
    assert main(argv) == 0
    assert "(2 from an earlier run)" in capsys.readouterr().out
    assert read_json(out)["annotations"] == read_json(reference)["annotations"]


def test_a_local_cluster_of_two_workers(stack_tif, tmp_path):
    here, there = tmp_path / "here.json", tmp_path / "there.json"
    assert main([str(stack_tif), "--out", str(here), *FAST]) == 0
    assert main([str(stack_tif), "--out", str(there), *FAST, "--workers", "2"]) == 0
    assert read_json(there) == read_json(here)
