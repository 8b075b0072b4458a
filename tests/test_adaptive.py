"""Adaptive scaling that follows the queued synthesis (Dask's own estimate ignores resources)."""

from __future__ import annotations

import asyncio

import pytest
from distributed.utils_test import gen_cluster, inc
from helpers import run_cli

import ebook2audio_dask as e2a
from ebook2audio_dask.cluster import parse_adapt, synthesis_target


@gen_cluster(client=True, nthreads=[])
async def test_synthesis_target_counts_resource_bound_work(c, s):
    futures = c.map(inc, range(6), resources={"GPU": 1}, pure=False)
    for _ in range(100):
        if sum(ts.state == "no-worker" for ts in s.tasks.values()) == 6:
            break
        await asyncio.sleep(0.02)
    assert synthesis_target(s) == 6  # one worker per queued synthesize task
    assert s.adaptive_target() == 1  # what plain Adaptive would ask for
    assert synthesis_target(s, slots_per_worker=4) == 2
    del futures


def test_parse_adapt():
    assert parse_adapt("0:8") == (0, 8) and parse_adapt("3") == (0, 3) and parse_adapt(None) is None
    for bad in ("8:2", "-1:3", "a:b", "0:0"):
        with pytest.raises(ValueError):
            parse_adapt(bad)


def test_adaptive_embedded_cluster_grows_from_zero_and_converts(corpus, tmp_path, cache_dir):
    [r] = e2a.convert(
        str(corpus / "entre-nous-lectures-francaises.txt"),
        str(tmp_path / "out"),
        chapters=[1, 2, 3, 4, 5, 6],
        engine="piper",
        voice="en_US-joe-medium",
        cache=cache_dir,
        adapt=(0, 2),
    )
    assert r.ok, r.error
    assert len(r.report["chunks_per_worker"]) == 2  # started with no worker, grew to two
    assert r.report["engine_loads"] == {w: 1 for w in r.report["chunks_per_worker"]}


def test_cli_adapt_usage_errors(tmp_path):
    proc = run_cli("convert", "x.epub", "-o", str(tmp_path), "--adapt", "5:1")
    assert proc.returncode == 2 and "bad --adapt '5:1'" in proc.stderr
    proc = run_cli(
        "convert",
        "x.epub",
        "-o",
        str(tmp_path),
        "--adapt",
        "0:2",
        "--scheduler",
        "tcp://127.0.0.1:1",
    )
    assert proc.returncode == 2 and "cannot be combined" in proc.stderr
