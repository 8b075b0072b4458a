"""A real, separate ``dask scheduler`` + ``dask worker --resources GPU=1`` processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import check_m4b_against_report, load_report, run_cli, wait_for

DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


@contextlib.contextmanager
def dask_processes(tmp_path, workers: dict[str, list[str]]):
    """``dask scheduler`` + one ``dask worker`` process per entry of *workers*.

    *workers* maps each worker's name to its extra command-line arguments.
    """
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = []
    logs = []

    def start(cmd, name):
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the cluster
        logs.append(log)
        procs.append(
            subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        )

    try:
        start(
            DASK
            + [
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            "scheduler",
        )
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 60, "the scheduler")
        address = json.loads(sched_file.read_text())["address"]
        common = [
            "--scheduler-file",
            str(sched_file),
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--nworkers",
            "1",
        ]
        for name, extra in workers.items():
            start(WORKER + common + extra + ["--name", name], name)
        from distributed import Client

        with Client(address, timeout=60) as c:
            c.wait_for_workers(len(workers), timeout=120)
            info = c.scheduler_info()["workers"]
        yield address, info
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for log in logs:
            log.close()


@pytest.fixture
def external_cluster(tmp_path):
    """Scheduler + two GPU-tagged workers + one CPU-only worker, all separate OS processes."""
    gpu = ["--resources", "GPU=1"]
    with dask_processes(tmp_path, {"gpu-a": gpu, "gpu-b": gpu, "cpu-only": []}) as cluster:
        yield cluster


def test_no_worker_with_the_resource_fails_clearly_instead_of_hanging(tmp_path, corpus):
    """Only a CPU worker: books needing GPU=1 fail after the configured wait, in one clear line."""
    with dask_processes(tmp_path, {"cpu-only": []}) as (address, _):
        # the subprocess timeout is the hang guard (no wall-clock assert: a busy machine is slow)
        proc = run_cli(
            "convert",
            str(corpus / "entre-nous-lectures-francaises.txt"),
            "-o",
            str(tmp_path / "out"),
            "--chapters",
            "1",
            "--scheduler",
            address,
            "--no-progress",
            "--cache",
            str(tmp_path / "chunks"),
            env=dict(os.environ, DASK_EBOOK2AUDIO__CLUSTER__NO_WORKERS_TIMEOUT="3"),
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert "no worker offers the synthesize resources GPU=1 (waited 3 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "entre-nous-lectures-francaises.m4b").exists()


@pytest.mark.slow
def test_convert_on_external_cluster_uses_both_gpu_workers(external_cluster, corpus, tmp_path):
    address, workers = external_cluster
    gpu_addresses = {a for a, w in workers.items() if w.get("resources", {}).get("GPU")}
    cpu_addresses = set(workers) - gpu_addresses
    assert len(gpu_addresses) == 2 and len(cpu_addresses) == 1
    out = tmp_path / "out"
    proc = run_cli(
        "convert",
        str(corpus / "entre-nous-lectures-francaises.txt"),
        "-o",
        str(out),
        "--chapters",
        "1-4",
        "--scheduler",
        address,
        "--cache",
        str(tmp_path / "cache"),
        "--batch-chars",
        "300",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    report = load_report(out / "entre-nous-lectures-francaises.report.json")
    per_worker = report["chunks_per_worker"]
    # synthesis ran on both GPU workers and never on the CPU-only one
    assert set(per_worker) == gpu_addresses, (per_worker, gpu_addresses)
    assert (
        sum(per_worker.values())
        == report["totals"]["chunks_synthesized"]
        == report["totals"]["unique_chunks"]
    )
    assert report["engine"] == "espeak" and report["language"] == "fr"
    check_m4b_against_report(out / "entre-nous-lectures-francaises.m4b", report, expect_cover=False)
