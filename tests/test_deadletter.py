"""Retries, the dead-letter file and --allow-gaps, with an engine that fails on purpose.

The engine is ``tests/plugins/faulty_tts.py`` (espeak-ng that raises, fails
a few times, or SIGKILLs its worker on trigger words), plugged in through an
entry point like any third-party engine.  End-to-end tests run the real CLI
with its embedded cluster of worker processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fake_tts import FakeEngine
from helpers import ROOT, check_m4b_against_report, load_report, run_cli

from ebook2audio_dask.engines import load_engine, unload_engines
from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.pipeline import tasks
from ebook2audio_dask.storage import ChunkStore

PLUGINS = ROOT / "tests" / "plugins"

#: In chapter 2 of childrens-literature.epub ("THE LORD HELPETH MAN AND BEAST"), once.
FAIL_WORD = "Wonderful! But are there tame animals"
#: In chapter 2 too: "Assuredly."
FLAKY_WORD = "Assuredly"
#: In chapter 3 ("THE REAL PRINCESS"): "Oh, miserably!" said the Princess.
KILL_WORD = "miserably"


# --------------------------------------------------------------------------- unit: synthesize_task
@pytest.fixture
def fake(monkeypatch):
    """``fake(**script)``: the registered ``fake`` engine (tests/plugins/fake_tts.py) scripted so
    (see ``FakeEngine.configure``), made fresh; returns it (``None`` when scripted unavailable)."""
    monkeypatch.setattr(tasks, "RETRY_PAUSES", (0.0,))

    def install(**script):
        unload_engines()
        FakeEngine.configure(**script)
        return None if script.get("unavailable") else load_engine(SPEC)

    yield install
    unload_engines()
    FakeEngine.configure()


def _items(*texts):
    return tuple((f"{i:040x}", t) for i, t in enumerate(texts, start=1))


SPEC = EngineSpec.make("fake", "v")


def test_a_failing_engine_call_is_split_and_only_the_bad_chunk_is_a_dead_letter(fake, tmp_path):
    engine = fake(bad={"b"})
    store = ChunkStore.make(str(tmp_path / "store"))
    result = tasks.synthesize_task(SPEC, _items("a", "b", "c"), store, retries=2)
    assert sorted(k for k, _ in result.samples) == [f"{1:040x}", f"{3:040x}"]
    [failure] = result.failures
    assert failure.key == f"{2:040x}"
    assert failure.attempts == 3  # 1 + 2 retries, alone
    assert failure.error == "RuntimeError: cannot say b second line"  # one line
    assert set(store.list_sizes("fake")) == {f"{1:040x}", f"{3:040x}"}
    assert engine.calls[0] == ["a", "b", "c"] and engine.calls.count(["b"]) == 3


def test_a_flaky_chunk_is_retried_until_it_works(fake, tmp_path):
    engine = fake(batch_size=1, flaky={"b": 2})
    store = ChunkStore.make(str(tmp_path / "store"))
    result = tasks.synthesize_task(SPEC, _items("a", "b"), store, retries=2)
    assert not result.failures and len(result.samples) == 2
    assert engine.calls.count(["b"]) == 3
    # one retry fewer than it needs: a dead letter
    engine = fake(batch_size=1, flaky={"b": 2})
    result = tasks.synthesize_task(
        SPEC, _items("a", "b"), ChunkStore.make(str(tmp_path / "s2")), retries=1
    )
    assert [f.attempts for f in result.failures] == [2]


def test_a_rerun_task_does_not_redo_chunks_already_in_the_store(fake, tmp_path):
    """A task rescheduled after its worker died finds what its first attempt wrote."""
    store = ChunkStore.make(str(tmp_path / "store"))
    items = _items("a", "b", "c", "d")
    fake(batch_size=1)
    tasks.synthesize_task(SPEC, items[:2], store)
    engine = fake(batch_size=1)
    result = tasks.synthesize_task(SPEC, items, store)
    assert engine.calls == [["c"], ["d"]]
    assert dict(result.samples) == {k: 8000 for k, _ in items}


def test_engine_load_failure_still_fails_the_task(fake, tmp_path):
    """Only the engine call's errors become dead letters; a broken engine fails the task (Dask
    retries it)."""
    from ebook2audio_dask.errors import EngineError

    fake(unavailable="no model")  # load_engine: "engine 'fake' is not available: no model"
    with pytest.raises(EngineError):
        tasks.synthesize_task(SPEC, _items("a"), ChunkStore.make(str(tmp_path / "store")))


# --------------------------------------------------------------------------- end to end
def _convert(
    corpus: Path, out: Path, cache: Path, chapters: str, *extra: str, env: dict | None = None
):
    books = [
        str(corpus / "childrens-literature.epub"),
        str(corpus / "entre-nous-lectures-francaises.txt"),
    ]
    return run_cli(
        "convert",
        *books,
        "-o",
        str(out),
        "--cache",
        str(cache),
        "--engine",
        "faulty",
        "--chapters",
        chapters,
        "--batch-chars",
        "400",
        "--no-progress",
        *extra,
        env={
            "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        },
    )


def _dead_letters(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_dead_letter_file_then_allow_gaps_then_a_clean_rerun(corpus, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    m4b = out / "childrens-literature.m4b"
    dead = out / "childrens-literature.failures.jsonl"

    # 1. One chunk the engine always fails on: the book fails, the other book finishes.
    first = _convert(corpus, out, cache, "2", env={"E2A_FAULTY_FAIL": FAIL_WORD})
    assert first.returncode == 1, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {corpus / 'childrens-literature.epub'}: 1 chunk could not be synthesised "
        "(first: chapter 2, "
        """RuntimeError: cannot speak '"Wonderful! But are '); """
        f"see {dead}; run again to retry them, "
        "or use --allow-gaps"
    ], first.stderr
    assert "Traceback" not in first.stderr
    assert not m4b.exists() and not list(out.glob("childrens-literature*.m4b*"))
    assert (out / "entre-nous-lectures-francaises.m4b").exists()
    [letter] = _dead_letters(dead)
    assert FAIL_WORD in letter["text"] and letter["chapter"] == 2
    assert letter["chapter_title"] == "191 THE LORD HELPETH MAN AND BEAST"
    assert letter["attempts"] == 3 and letter["error"].startswith("RuntimeError: cannot speak")
    assert letter["worker"].startswith("tcp://127.0.0.1:") and len(letter["chunk"]) == 40
    assert (cache / "faulty").exists() and letter["chunk"] not in {
        p.stem for p in cache.rglob("*.wav")
    }

    # 2. --allow-gaps: finished, with a silence of about the chunk's length where it goes.
    second = _convert(corpus, out, cache, "2", "--allow-gaps", "--retries", "0",
                      env={"E2A_FAULTY_FAIL": FAIL_WORD})  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "WARNING: 1 chunk(s) could not be synthesised, 1 gap(s) of silence" in second.stderr
    report = load_report(out / "childrens-literature.report.json")
    totals = report["totals"]
    assert totals["chunks_failed"] == 1 and report["failures"] == str(dead)
    assert (
        totals["chunks_from_cache"] == totals["unique_chunks"] - 1
        and totals["chunks_synthesized"] == 0
    )
    [gap] = report["gaps"]
    assert gap["chunk"] == letter["chunk"] and gap["chapter"] == 2
    assert 2.0 < gap["duration_s"] < 12.0, gap  # ~90 characters of speech
    assert any("could not be synthesised" in e for e in report["errors"])
    [letter2] = _dead_letters(dead)
    assert letter2["attempts"] == 1  # --retries 0
    check_m4b_against_report(m4b, report, expect_cover=True)
    from ebook2audio_dask.audio import decode_to_pcm

    pcm = decode_to_pcm(str(m4b), 16000).astype(np.float64)
    hole = pcm[
        int((gap["start_s"] + 0.1) * 16000) : int(
            (gap["start_s"] + gap["duration_s"] - 0.1) * 16000
        )
    ]
    assert len(hole) and np.sqrt(np.mean(hole**2)) < 50, "the gap is not silent"
    gapped_s = totals["audio_s"]

    # 3. The engine is fixed: a rerun synthesises only the missing chunk; the dead letters are gone.
    third = _convert(corpus, out, cache, "2")
    assert third.returncode == 0, third.stderr
    report = load_report(out / "childrens-literature.report.json")
    totals = report["totals"]
    assert totals["chunks_synthesized"] == 1 and totals["chunks_failed"] == 0
    assert report["gaps"] == [] and report["failures"] is None and not dead.exists()
    assert abs(totals["audio_s"] - gapped_s) < 8.0
    check_m4b_against_report(m4b, report, expect_cover=True)


@pytest.mark.slow
def test_a_flaky_engine_is_retried_and_the_book_completes(corpus, tmp_path):
    out = tmp_path / "out"
    result = _convert(corpus, out, tmp_path / "cache", "2", env={"E2A_FAULTY_FLAKY": FLAKY_WORD})
    assert result.returncode == 0, result.stderr
    report = load_report(out / "childrens-literature.report.json")
    assert report["totals"]["chunks_failed"] == 0 and report["gaps"] == []
    assert not (out / "childrens-literature.failures.jsonl").exists()


@pytest.mark.slow
def test_a_chunk_that_keeps_killing_workers_ends_as_a_clear_failure(corpus, tmp_path):
    """Its task is retried on other workers until Dask's allowed-failures, then the book
    fails with a dead-letter file; the other book finishes; a rerun redoes only those chunks."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    dead = out / "childrens-literature.failures.jsonl"
    env = {"E2A_FAULTY_KILL": KILL_WORD, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    # The other book goes first: tasks queued on a worker that dies count its death too
    # (see docs/faults.md), and this test is about the book that kills, not bystanders.
    first = _convert(
        corpus, out, cache, "3", "--workers", "2", "--priority", "entre-nous*", env=env
    )
    assert first.returncode == 1, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error: ")]
    assert (
        len(errors) == 1
        and "could not be synthesised (first: chapter 3, KilledWorker: the worker died 2 times"
        in errors[0]
    ), first.stderr
    assert "Traceback" not in first.stderr
    assert not (out / "childrens-literature.m4b").exists()
    assert (out / "entre-nous-lectures-francaises.m4b").exists()
    letters = _dead_letters(dead)
    assert any(KILL_WORD in x["text"] for x in letters)
    assert all(x["error"].startswith("KilledWorker:") and x["attempts"] == 2 for x in letters)
    stored = {p.stem for p in cache.rglob("*.wav")}
    assert not stored & {x["chunk"] for x in letters}

    second = _convert(corpus, out, cache, "3")
    assert second.returncode == 0, second.stderr
    totals = load_report(out / "childrens-literature.report.json")["totals"]
    assert totals["chunks_synthesized"] == len(letters)
    assert totals["chunks_from_cache"] == totals["unique_chunks"] - len(letters)
    assert not dead.exists()
