"""Scale-out beyond this machine: many in-process workers and a synthetic engine.

A "sleep" engine waits a fixed time per character (``time.sleep`` releases the
GIL, as a GPU engine waiting on CUDA does) and returns a few samples of
silence, so what is measured is the pipeline and Dask's scheduling, not
speech.  A library of real books (the stories of *The Adventures of Sherlock
Holmes*, one book each) is converted on an in-process ``LocalCluster`` of N
single-thread workers, each advertising ``GPU=1``.

* parallel efficiency = ideal time / measured time, where ideal = the sum of
  all engine sleeps / N (every worker busy all the time, no overhead);
* scheduling overhead per synthesize task and per chunk =
  (measured − ideal) × N / tasks (resp. chunks): the worker-time each task
  costs beyond its own work;
* first / last book: when the first and the last book of the batch were
  written, from the start of the run.

Prints one JSON line per worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = (HERE.parent / ".." / "shared" / "corpus").resolve()
SHERLOCK = CORPUS / "adventures-of-sherlock-holmes-standardebooks.epub"


def make_library(folder: Path, n_books: int) -> list[str]:
    """One HTML book per story of the Sherlock Holmes EPUB (real text, distinct chunks)."""
    from ebook2audio_dask import read_book

    book = read_book(str(SHERLOCK))
    stories = [c for c in book.chapters if sum(len(p) for p in c.paragraphs) > 20000][:n_books]
    paths = []
    for i, story in enumerate(stories):
        body = "".join(f"<p>{p}</p>" for p in story.paragraphs)
        path = folder / f"{i:02d}-{story.title.lower().replace(' ', '-')[:30]}.html"
        path.write_text(
            f"<html lang='en'><body><h1>{story.title}</h1>{body}</body></html>", encoding="utf-8"
        )
        paths.append(str(path))
    return paths


def run(n_workers: int, books: list[str], tmp: Path) -> dict:
    from distributed import Client, LocalCluster

    import ebook2audio_dask as e2a

    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=False,
            resources={"GPU": 1},
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        finished: list[float] = []
        t0 = time.perf_counter()
        results = e2a.convert(
            books,
            str(tmp / f"out-{n_workers}"),
            engine="sleep",
            client=client,
            cache=str(tmp / f"chunks-{n_workers}"),
            on_result=lambda r: finished.append(time.perf_counter() - t0),
        )
        wall = time.perf_counter() - t0
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise SystemExit(f"conversion failed: {bad[:2]}")
    chars = sum(r.report["totals"]["chars"] for r in results)
    chunks = sum(r.report["totals"]["chunks_synthesized"] for r in results)
    synth = sum(r.report["totals"]["synth_s"] for r in results)
    tasks = sum(r.report["totals"]["synthesize_tasks"] for r in results)
    ideal = synth / n_workers
    return {
        "workers": n_workers,
        "books": len(books),
        "chars": chars,
        "chunks": chunks,
        "synthesize_tasks": tasks,
        "engine_s": round(synth, 2),
        "ideal_s": round(ideal, 2),
        "wall_s": round(wall, 2),
        "efficiency": round(ideal / wall, 3),
        "overhead_ms_per_task": round((wall - ideal) * n_workers / tasks * 1000, 1)
        if tasks
        else None,
        "overhead_ms_per_chunk": round((wall - ideal) * n_workers / chunks * 1000, 2),
        "first_book_s": round(min(finished), 2),
        "last_book_s": round(max(finished), 2),
        "book_finish_s": [round(x, 2) for x in sorted(finished)],
        "workers_used": len({w for r in results for w in r.report["chunks_per_worker"]}),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="8,32,64")
    parser.add_argument("--books", type=int, default=10)
    parser.add_argument(
        "--per-char-ms",
        type=float,
        default=5.0,
        help="engine time per character: 5 ms = 200 chars/s per worker, between XTTS "
        "(~60 chars/s) and batched VITS (1000s) on one GPU",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.books, args.per_char_ms = "4,8", 3, 0.1
    from bench_engines import SleepEngine  # the engine "sleep", registered by its entry point

    with tempfile.TemporaryDirectory(prefix="e2a-scaleout-") as tmp:
        books = make_library(Path(tmp), args.books)
        SleepEngine.per_char = args.per_char_ms / 1000
        for n in (int(x) for x in args.workers.split(",")):
            row = run(n, books, Path(tmp))
            row["per_char_ms"] = round(SleepEngine.per_char * 1000, 4)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("DASK_EBOOK2AUDIO__SYNTHESIZE__RETRIES", "0")
    sys.exit(main())
