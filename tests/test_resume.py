"""Killing a conversion half-way and running it again recomputes only missing chunks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, check_m4b_against_report, load_report, run_cli


def _chunks_in(store: Path) -> int:
    return sum(1 for p in store.rglob("*.wav")) if store.exists() else 0


@pytest.mark.slow
def test_killed_conversion_resumes_from_the_chunk_store(corpus, tmp_path):
    book = corpus / "childrens-literature.epub"
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        "convert",
        str(book),
        "-o",
        str(out),
        "--chapters",
        "1",
        "--cache",
        str(cache),
        "--batch-chars",
        "400",
        "--workers",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebook2audio_dask", *args],
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _chunks_in(cache) < 6:
            assert proc.poll() is None, "conversion finished before it could be killed"
            assert time.monotonic() < deadline, "no chunks appeared in the store"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its cluster's worker processes
        proc.wait()
    done_before = _chunks_in(cache)
    assert not (out / "childrens-literature.m4b").exists()
    # a chunk file at its final name is always complete (writes go to a temp name first)
    from ebook2audio_dask.audio.wav import decode_wav

    for wav in cache.rglob("*.wav"):
        if not wav.name.startswith("."):
            samples, _ = decode_wav(wav.read_bytes())
            assert len(samples) > 0

    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    report = load_report(out / "childrens-literature.report.json")
    totals = report["totals"]
    assert totals["chunks_from_cache"] >= done_before > 0
    assert totals["chunks_synthesized"] == totals["unique_chunks"] - totals["chunks_from_cache"]
    assert totals["chunks_synthesized"] > 0
    check_m4b_against_report(out / "childrens-literature.m4b", report, expect_cover=True)

    # a third run synthesises nothing at all
    third = run_cli(*args)
    assert third.returncode == 0, third.stderr
    totals = load_report(out / "childrens-literature.report.json")["totals"]
    assert (
        totals["chunks_synthesized"] == 0 and totals["chunks_from_cache"] == totals["unique_chunks"]
    )
