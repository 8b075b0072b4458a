"""Worker memory limits (Dask's ``memory_limit``) are set and respected.

How much the merge holds as books get longer is measured in
``benchmarks/bench_merge_memory.py`` (1 h and 10 h books); that EPUBs are not
read whole into memory is tested in ``test_ingest_limits.py``.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest
from dask.utils import parse_bytes
from distributed import Client
from helpers import check_m4b_against_report, run_cli


def test_the_memory_limit_reaches_every_embedded_worker():
    from ebook2audio_dask.cluster import local_cluster

    with local_cluster(2, memory_limit="700MiB", gpus="none", dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    assert limits == [700 * 2**20] * 2


def test_the_default_memory_limit_shares_the_machine_among_the_workers():
    from ebook2audio_dask.cluster import local_cluster

    with (
        local_cluster(2, gpus="none", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    total = psutil.virtual_memory().total
    assert all(0.4 * total < limit <= 0.55 * total for limit in limits), limits


def test_a_bad_memory_limit_is_a_usage_error(corpus, tmp_path):
    result = run_cli("convert", str(corpus / "childrens-literature.epub"), "-o", str(tmp_path),
                     "--memory-limit", "lots", "--no-progress")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: invalid memory limit 'lots': use a size such as 4GiB, auto or 0"
    ), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_book_converts_within_a_tight_worker_memory_limit(corpus, tmp_path):
    """Piper on two workers limited to 800 MiB each: the book is written, no worker
    ever reaches Dask's pause threshold (80 %), and none is restarted."""
    import ebook2audio_dask as e2a

    limit = parse_bytes("800MiB")
    peak: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.is_set():
            for child in me.children(recursive=True):
                try:
                    if child.name().startswith("python"):
                        peak[child.pid] = max(peak.get(child.pid, 0), child.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        [result] = e2a.convert(
            str(corpus / "childrens-literature.epub"),
            str(tmp_path / "out"),
            chapters=[2],
            engine="piper",
            cache=str(tmp_path / "cache"),
            n_workers=2,
            memory_limit="800MiB",
        )
    finally:
        done.set()
        sampler.join()
    assert result.ok, result.error
    check_m4b_against_report(
        tmp_path / "out" / "childrens-literature.m4b", result.report, expect_cover=True
    )
    workers = {
        pid: rss for pid, rss in peak.items() if rss > 100 * 2**20
    }  # not the resource tracker
    assert len(workers) == 2, f"a worker was restarted: {peak}"
    assert max(workers.values()) < 0.8 * limit, {
        pid: f"{rss / 2**20:.0f} MiB" for pid, rss in workers.items()
    }
