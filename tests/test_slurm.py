"""SLURM for real: a one-node slurmctld/slurmd on 127.0.0.1 launches the Dask workers as jobs."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from slurm_local import local_slurm, missing

import ebook2audio_dask as e2a

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is part of the dev install")

PROFILE = {
    "partition": "debug",
    "cores": 1,
    "memory": "1GB",
    "walltime": "00:10:00",
    "interface": "lo",
}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    absent = missing()
    if absent:
        message = (
            f"SLURM is not installed ({', '.join(absent)} missing): "
            ".ci/install-dev.sh installs it as root"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("slurm")
    with local_slurm(folder) as env:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = env[
            "SLURM_CONF"
        ]  # sbatch/squeue/scancel, as dask-jobqueue calls them
        try:
            yield env
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


def _squeue(env) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%j %T"], env=env, capture_output=True, text=True, timeout=30
    )
    return out.stdout.split("\n") if out.stdout.strip() else []


def test_workers_are_gpu_jobs_with_resource_tags(slurm, tmp_path):
    from distributed import Client

    from ebook2audio_dask.cluster import slurm_cluster, slurm_job_script

    script = slurm_job_script(**PROFILE, log_directory=str(tmp_path))
    assert (
        "#SBATCH --gres=gpu:1" in script
        and "--resources GPU=1" in script
        and "--lifetime" in script
    )
    with slurm_cluster(**PROFILE, log_directory=str(tmp_path)) as cluster, Client(cluster) as c:
        cluster.scale(2)
        c.wait_for_workers(2, timeout=120)
        workers = c.scheduler_info()["workers"].values()
        assert all(w["resources"] == {"GPU": 1} for w in workers)
        # (lambdas travel by value: the workers cannot import this test module)
        assert all(
            c.run(lambda: os.environ.get("SLURM_JOB_ID")).values()
        )  # they run inside SLURM jobs
        gpus = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(gpus.values()) == ["0", "1"]  # one GPU each, set by SLURM
        assert len([line for line in _squeue(slurm) if "RUNNING" in line]) == 2
    time.sleep(1)
    assert not [
        line for line in _squeue(slurm) if "RUNNING" in line
    ]  # closing the cluster cancels its jobs


def test_convert_on_adaptive_slurm_workers(slurm, corpus, tmp_path):
    seen: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(len([line for line in _squeue(slurm) if line.strip()]))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        [r] = e2a.convert(
            str(corpus / "entre-nous-lectures-francaises.txt"),
            str(tmp_path / "out"),
            chapters=[1, 2, 3, 4],
            engine="espeak",
            cache=str(tmp_path / "chunks"),
            slurm={**PROFILE, "log_directory": str(tmp_path / "logs")},
            adapt=(0, 2),
        )
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert r.ok, r.error
    assert max(seen) >= 1  # the workers were SLURM jobs (there are no others)
    assert 1 <= len(r.report["chunks_per_worker"]) <= 2
    assert (tmp_path / "out" / "entre-nous-lectures-francaises.m4b").stat().st_size > 10_000
