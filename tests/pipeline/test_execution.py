"""The execution layer: joblib and a real Dask cluster give the same results, in input order,
and a worker that dies mid-run neither loses nor duplicates a patient."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client, LocalCluster, get_worker

from features import extraction
from pipeline import cohort as synthetic
from pipeline.execution import SCHEDULER_ENV, map_cases, resolve_scheduler
from tests.features.test_extraction import options

TIMING_COLUMNS = [extraction.SECONDS, extraction.CACHED]


# Top-level functions: Dask workers import them by name.
def square_after_a_pause(item: int) -> tuple[int, int]:
    time.sleep(0.01 * (item % 3))  # finish out of order
    return item, item * item


def fail_on_three(item: int) -> int:
    if item == 3:
        raise ValueError(f"case {item} is broken")
    return item


def worker_address(_: int) -> str:
    return get_worker().address


def die_once_then_square(item: int, folder: str) -> int:
    """Record every attempt; the first attempt at item 2 kills its own worker process (SIGKILL)."""
    Path(folder, f"{item}-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(0.2)
    if item == 2 and not Path(folder, "killed").exists():
        Path(folder, "killed").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return item * item


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(autouse=True)
def no_scheduler_in_environment(monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)


def test_local_and_dask_back_ends_yield_the_same_results_in_input_order(cluster, client):
    items = list(range(12))
    expected = [(i, i * i) for i in items]
    assert list(map_cases(square_after_a_pause, items, jobs=1, progress=False)) == expected
    assert list(map_cases(square_after_a_pause, items, jobs=2, progress=False)) == expected
    assert list(map_cases(square_after_a_pause, items, scheduler=client, progress=False)) == expected
    assert list(map_cases(square_after_a_pause, items, scheduler=cluster.scheduler_address, progress=False)) == expected
    assert list(map_cases(square_after_a_pause, [], scheduler=client, progress=False)) == []


def test_a_failing_case_reaches_the_caller_on_both_back_ends(client):
    with pytest.raises(ValueError, match="case 3 is broken"):
        list(map_cases(fail_on_three, range(5), jobs=2, progress=False))
    with pytest.raises(ValueError, match="case 3 is broken"):
        list(map_cases(fail_on_three, range(5), scheduler=client, retries=0, progress=False))


def test_the_environment_variable_selects_the_cluster_and_the_command_line_wins(cluster, monkeypatch):
    monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_address)
    assert resolve_scheduler(None) == cluster.scheduler_address
    assert resolve_scheduler("tcp://elsewhere:8786") == "tcp://elsewhere:8786"
    assert resolve_scheduler("local") is None
    addresses = set(map_cases(worker_address, range(6), progress=False))
    assert addresses <= set(cluster.scheduler_info["workers"])
    with pytest.raises(ValueError, match="No worker found"):
        list(map_cases(worker_address, range(2), scheduler="local", progress=False))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory, world, labels, client):
    """The same small synthetic cohort written by local processes and by the cluster."""
    local, dask = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("dask")
    synthetic.write_cohort(local, n=3, seed=5, site="B", world=world, labels=labels, jobs=1, progress=False)
    synthetic.write_cohort(dask, n=3, seed=5, site="B", world=world, labels=labels, scheduler=client, progress=False)
    return local, dask


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_phantoms_rendered_on_the_cluster_are_byte_identical(cohorts):
    local, dask = cohorts
    assert _digests(local) == _digests(dask)


def test_extraction_on_the_cluster_matches_local_processes_and_shares_the_cache(cohorts, client, tmp_path, labels):
    local, _ = cohorts
    manifest = local / synthetic.CLINICAL_FILE
    cases = extraction.read_manifest(manifest)
    url_cases = extraction.read_manifest(manifest.as_uri())  # file:// URLs on the workers
    assert all(extraction.is_url(case.image) for case in url_cases)
    cache = (tmp_path / "cache").as_uri()

    local_lesions, local_report = extraction.extract_cohort(
        cases, options(labels), None, jobs=2, progress=False, map_cases=map_cases
    )
    dask_lesions, dask_report = extraction.extract_cohort(
        url_cases, options(labels), cache, scheduler=client, progress=False, map_cases=map_cases
    )
    pd.testing.assert_frame_equal(local_lesions, dask_lesions)
    pd.testing.assert_frame_equal(local_report.drop(columns=TIMING_COLUMNS), dask_report.drop(columns=TIMING_COLUMNS))
    assert (local_report[extraction.STATUS] == extraction.OK).all() and not dask_report[extraction.CACHED].any()

    cached_lesions, cached_report = extraction.extract_cohort(cases, options(labels), cache, jobs=1, progress=False)
    assert cached_report[extraction.CACHED].all()
    pd.testing.assert_frame_equal(local_lesions, cached_lesions)


def test_a_worker_killed_mid_run_loses_and_duplicates_no_patient(cluster, client, tmp_path):
    items = list(range(8))
    before = set(client.run(os.getpid).values())
    results = list(
        map_cases(partial(die_once_then_square, folder=str(tmp_path)), items, scheduler=client, progress=False)
    )
    assert results == [i * i for i in items]
    attempts = pd.Series([p.name.split("-")[0] for p in tmp_path.iterdir() if p.name != "killed"]).value_counts()
    assert (tmp_path / "killed").exists() and attempts["2"] == 2  # the killed case ran again
    assert set(attempts.index) == {str(i) for i in items}
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the worker
    assert set(client.run(os.getpid).values()) != before
