"""A whole library in one run: books stream out in input order (issue 16).

Not timed: the order of events is what is checked.  30 generated books
(two chapters each, different real prose per book, espeak) on an embedded
cluster of 2 workers; Dask's task stream says when each synthesize task
started, the ``on_result`` callback when each book was published.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import ebook2audio_dask as e2a

N_BOOKS = 30


def _paragraphs(corpus: Path) -> list[str]:
    """French prose paragraphs (the corpus's plain-text book), each 120-600 characters."""
    text = (corpus / "entre-nous-lectures-francaises.txt").read_text(encoding="utf-8")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paragraphs if 120 <= len(p) <= 600]


def make_library(folder: Path, corpus: Path, n: int) -> list[str]:
    """*n* Markdown books of two chapters, two paragraphs each, none sharing a paragraph."""
    paragraphs = _paragraphs(corpus)
    assert len(paragraphs) >= 4 * n, len(paragraphs)
    books = []
    for i in range(n):
        p = paragraphs[4 * i : 4 * i + 4]
        path = folder / f"book-{i:02d}.md"
        path.write_text(
            f"# Livre {i}, chapitre un\n\n{p[0]}\n\n{p[1]}\n\n# Livre {i}, chapitre deux\n\n"
            f"{p[2]}\n\n{p[3]}\n",
            encoding="utf-8",
        )
        books.append(str(path))
    return books


def kendall_tau(order: list[int]) -> float:
    """Kendall's tau between *order* and 0..n-1 (1: the same order, -1: reversed)."""
    n = len(order)
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            if order[i] < order[j]:
                concordant += 1
            elif order[i] > order[j]:
                discordant += 1
    return (concordant - discordant) / (n * (n - 1) / 2)


def test_kendall_tau():
    assert kendall_tau([0, 1, 2, 3]) == 1.0
    assert kendall_tau([3, 2, 1, 0]) == -1.0
    assert kendall_tau([1, 0, 2, 3]) == pytest.approx(4 / 6)


@pytest.mark.slow
def test_a_library_streams_out_in_input_order(tmp_path, corpus):
    from distributed import Client, get_task_stream

    books = make_library(tmp_path, corpus, N_BOOKS)
    finished: dict[str, float] = {}

    def on_result(result):
        finished[result.source] = time.time()

    with e2a.local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            results = e2a.convert(books, str(tmp_path / "out"), engine="espeak", client=client,
                                  cache=str(tmp_path / "chunks"), on_result=on_result)  # fmt: skip
        tasks = stream.data
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert len(finished) == N_BOOKS

    # finishing order against input order
    order = [books.index(source) for source, _ in sorted(finished.items(), key=lambda kv: kv[1])]
    tau = kendall_tau(order)
    assert tau >= 0.8, f"books finished in order {order} (Kendall tau {tau:.2f})"

    # the first book is out before the last book's synthesis has even started
    def starts(prefix: str) -> list[float]:
        return [ss["start"] for t in tasks if t["key"].startswith(prefix)
                for ss in t["startstops"] if ss["action"] == "compute"]  # fmt: skip

    last_stem = Path(books[-1]).stem
    last_synth = starts(f"synthesize-{last_stem}-")
    assert last_synth, "no synthesize task of the last book in the task stream"
    first_done = min(finished.values())
    assert first_done < min(last_synth), (
        f"the first book finished {first_done - min(last_synth):.1f} s after the last book's "
        f"synthesis started"
    )
    # every merge ran once, after its own book's last batch (a dependency, not a waiting task);
    # the task stream's times are corrected by each worker's own clock offset: a few ms of slack
    for source in books:
        stem = Path(source).stem
        merge = starts(f"merge-{stem}-")
        synth_ends = [ss["stop"] for t in tasks if t["key"].startswith(f"synthesize-{stem}-")
                      for ss in t["startstops"] if ss["action"] == "compute"]  # fmt: skip
        assert len(merge) == 1 and synth_ends and merge[0] >= max(synth_ends) - 0.25, stem
