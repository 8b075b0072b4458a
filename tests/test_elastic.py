"""Workers joining and leaving a running job.

Real ``dask scheduler`` / ``dask worker`` processes.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import check_m4b_against_report, wait_for
from test_external_cluster import WORKER, dask_processes

import ebook2audio_dask as e2a

BOOK = "childrens-literature.epub"
GPU = ["--resources", "GPU=1"]


def _convert_in_thread(address, corpus, tmp_path, results):
    from distributed import Client

    with Client(address, timeout=60) as c:
        results.extend(
            e2a.convert(
                str(corpus / BOOK),
                str(tmp_path / "out"),
                chapters=[2],
                client=c,
                cache=str(tmp_path / "chunks"),
                batch_chars=400,
            )
        )


@pytest.mark.slow
def test_a_worker_that_joins_mid_job_gets_work(tmp_path, corpus):
    import subprocess

    with dask_processes(tmp_path, {"gpu-a": GPU}) as (address, _):
        results: list = []
        runner = threading.Thread(
            target=_convert_in_thread, args=(address, corpus, tmp_path, results)
        )
        runner.start()
        time.sleep(2)  # the job is under way on gpu-a alone
        late = subprocess.Popen(
            WORKER
            + [
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                *GPU,
                "--name",
                "gpu-late",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            runner.join(timeout=300)
        finally:
            late.terminate()
            late.wait(timeout=30)
    assert not runner.is_alive()
    [r] = results
    assert r.ok, r.error
    assert len(r.report["chunks_per_worker"]) == 2, r.report[
        "chunks_per_worker"
    ]  # the late worker spoke too
    check_m4b_against_report(
        tmp_path / "out" / "childrens-literature.m4b", r.report, expect_cover=True
    )


@pytest.mark.slow
def test_a_worker_retired_mid_job_hands_its_work_over(tmp_path, corpus):
    from distributed import Client

    with dask_processes(tmp_path, {"gpu-a": GPU, "gpu-b": GPU}) as (address, workers):
        results: list = []
        runner = threading.Thread(
            target=_convert_in_thread, args=(address, corpus, tmp_path, results)
        )
        runner.start()
        with Client(address, timeout=60) as c:
            by_name = {w["name"]: a for a, w in c.scheduler_info()["workers"].items()}

            def gpu_b_busy():
                return c.processing().get(by_name["gpu-b"])

            wait_for(gpu_b_busy, 60, "gpu-b to start synthesizing")
            c.retire_workers(
                [by_name["gpu-b"]], close_workers=True
            )  # graceful: Dask hands work over
            wait_for(lambda: len(c.scheduler_info()["workers"]) == 1, 60, "gpu-b to leave")
        runner.join(timeout=300)
    assert not runner.is_alive()
    [r] = results
    assert r.ok, r.error
    t = r.report["totals"]
    assert t["chunks_synthesized"] == t["unique_chunks"]
    check_m4b_against_report(
        tmp_path / "out" / "childrens-literature.m4b", r.report, expect_cover=True
    )
