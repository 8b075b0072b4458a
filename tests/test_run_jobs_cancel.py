"""A book whose plan is cancelled while ``run_jobs`` waits on the plans fails alone.

``distributed.wait`` raises ``FuturesCancelledError`` (not ``TimeoutError``)
when one of the plans it waits on is cancelled; ``run_jobs`` used to let it
escape, leaving its resource watch running and the other books unfinished.
The server's runner cancels jobs exactly then (a cancel right after submit).
"""

from __future__ import annotations

from pathlib import Path

import ebook2audio_dask as e2a


def _book(folder: Path, name: str, sentence: str) -> str:
    path = folder / f"{name}.txt"
    path.write_text(f"{name}\n\n\nChapter One\n\n" + (sentence + " ") * 8 + "\n", encoding="utf-8")
    return str(path)


def test_a_plan_cancelled_during_the_plan_wait_fails_only_its_book(tmp_path, client):
    books = [
        _book(tmp_path, "first", "The cat sat on the warm mat by the door."),
        _book(tmp_path, "second", "A dog ran along the quiet road to the hill."),
    ]
    cancelled = []

    def on_job(job) -> None:
        if job.source == books[0] and not cancelled:
            client.cancel(job.plan)  # before run_jobs waits on the plans
            cancelled.append(job.source)

    results = e2a.convert(books, str(tmp_path / "out"), engine="fake", client=client,
                          cache=str(tmp_path / "chunks"), on_job=on_job)  # fmt: skip
    assert cancelled == [books[0]]
    first, second = results
    assert not first.ok and first.error and "\n" not in first.error
    assert second.ok, second.error
    assert (tmp_path / "out" / "second.m4b").is_file()
    assert not (tmp_path / "out" / "first.m4b").exists()
