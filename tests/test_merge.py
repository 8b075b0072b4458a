"""The merge task called directly (no cluster): one pass when every length is known, two
when one is not.

The merge takes every chunk's length from its batches' results and the
store's sizes, writes the chapter marks first and encodes in one ffmpeg pass.
When a chunk in the store turns out to be another length than announced
(here: the sizes handed in are wrong on purpose), the chapters are written
again from the real lengths in a second pass: never a file whose chapter
marks are off.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from helpers import check_m4b_against_report

import ebook2audio_dask as e2a
from ebook2audio_dask.pipeline.merge import merge_task
from ebook2audio_dask.pipeline.tasks import (
    cover_task,
    parse_task,
    plan_task,
    synthesize_task,
)


def _book(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "two.md"
    path.write_text("# One\n\nThe first chapter is short. It has two sentences.\n\n"
                    "# Two\n\nThe second chapter follows. It ends here, with a third sentence.\n",
                    encoding="utf-8")  # fmt: skip
    return path


def _merged(tmp_path: Path, *, wrong_sizes: bool):
    source = _book(tmp_path)
    options = e2a.ConvertOptions(
        output=str(tmp_path / "out"), engine="espeak", cache=str(tmp_path / "chunks")
    )
    book = parse_task(str(source), False, None)
    plan = plan_task(book, options.plan_request())
    store = options.store()
    items = tuple({c.key: (c.key, c.text) for c in plan.chunks}.values())
    first, rest = items[:1], items[1:]
    synthesize_task(plan.spec, first, store)  # "cached" before the run
    sizes = store.sizes(plan.spec.engine, [k for k, _ in first])
    if wrong_sizes:
        sizes = {
            k: v + 2 * 22050 for k, v in sizes.items()
        }  # announced 22050 samples (1 s at 22 kHz) too long
    batch = synthesize_task(plan.spec, rest, store)
    chunk_batch = {k: 0 for k, _ in rest}
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    merged = merge_task(
        plan,
        cover_task(book),
        (batch,),
        chunk_batch,
        store,
        str(out / "two.m4b"),
        chunk_sizes=sizes,
        failures_url=str(out / "two.failures.jsonl"),
    )
    merged.publication.commit(None)
    return plan, merged, out / "two.m4b"


def _report(plan, merged) -> dict:
    chapters = [dataclasses.asdict(c) for c in merged.chapters]
    return {"title": plan.title, "authors": list(plan.authors), "chapters": chapters,
            "totals": {"audio_s": merged.audio_s}}  # fmt: skip


def test_every_length_known_gives_one_pass(tmp_path):
    plan, merged, m4b = _merged(tmp_path, wrong_sizes=False)
    assert merged.passes == 1
    assert [c.title for c in merged.chapters] == ["One", "Two"]
    check_m4b_against_report(m4b, _report(plan, merged), expect_cover=False)


def test_a_length_that_differs_gives_a_second_pass_with_true_chapters(tmp_path):
    plan, merged, m4b = _merged(tmp_path, wrong_sizes=True)
    right_plan, right, _ = _merged(tmp_path / "right", wrong_sizes=False)
    assert merged.passes == 2
    # the chapter times come from the real lengths, not the announced ones (1 s longer); espeak's
    # output varies by a few milliseconds from one synthesis to the next
    for got, want in zip(merged.chapters, right.chapters):
        assert abs(got.start_s - want.start_s) < 0.05 and abs(got.end_s - want.end_s) < 0.05, (
            got,
            want,
        )
    check_m4b_against_report(m4b, _report(plan, merged), expect_cover=False)
