"""What a read-along EPUB costs: a conversion with ``readalong=True`` vs the same without.

Three chapters (2-4) of the sample book with Piper on an embedded cluster of 2
workers, a cold chunk store for every run, the two kinds of run alternating
(``--rounds`` each).  Figures: the median wall time of each (``convert``'s
call, cluster already started and the engine loaded by a warm-up run of
chapter 5), and the median worker time (the sum of every task's duration on
the workers, from Dask's task stream: parse, chunk, synthesize, merge).
Target: read-along adds at most 10 % wall and 2 % worker time.  A read-along
run plans one sentence per chunk (so each sentence's start is a chunk's
exact start): its synthesis is of the same text, in more, smaller chunks.
Prints one JSON line.

    python benchmarks/bench_readalong.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOK = HERE.parent / "examples" / "childrens-literature.epub"


def one_run(client, chapters: list[int], readalong: bool, engine: str) -> dict:
    """Convert *chapters* with a cold store; wall and worker seconds of the run."""
    from distributed import get_task_stream

    import ebook2audio_dask as e2a

    with tempfile.TemporaryDirectory(prefix="bench-readalong-") as tmp:
        started = time.perf_counter()
        with get_task_stream(client) as ts:
            [result] = e2a.convert(
                str(BOOK),
                os.path.join(tmp, "out"),
                chapters=chapters,
                engine=engine,
                client=client,
                cache=os.path.join(tmp, "chunks"),
                readalong=readalong,
            )
        wall = time.perf_counter() - started
        if not result.ok:
            raise SystemExit(f"conversion failed: {result.error}")
        worker = 0.0
        for task in ts.data:
            for span in task.get("startstops", ()):
                if span.get("action") == "compute":
                    worker += span["stop"] - span["start"]
        report = result.report
        return {
            "readalong": readalong,
            "wall_s": round(wall, 3),
            "worker_s": round(worker, 3),
            "chunks": report["totals"]["chunks"],
            "audio_s": report["totals"]["audio_s"],
            "merge_s": report["totals"]["merge_s"],
            "sentences": (report.get("readalong") or {}).get("sentences"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="espeak, one chapter, one round")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    engine = "espeak" if args.quick else "piper"
    chapters = [2] if args.quick else [2, 3, 4]
    rounds = 1 if args.quick else args.rounds
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, resources={"GPU": 1}) as cluster,
        Client(cluster) as client,
    ):
        one_run(client, [5], False, engine)  # engines loaded on both workers
        runs = []
        for _ in range(rounds):
            for readalong in (False, True):
                runs.append(one_run(client, chapters, readalong, engine))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    plain = [r for r in runs if not r["readalong"]]
    along = [r for r in runs if r["readalong"]]
    wall = (statistics.median(r["wall_s"] for r in plain),
            statistics.median(r["wall_s"] for r in along))  # fmt: skip
    worker = (statistics.median(r["worker_s"] for r in plain),
              statistics.median(r["worker_s"] for r in along))  # fmt: skip
    from ebook2audio_dask import read_book

    chars = sum(c.chars for c in read_book(str(BOOK)).select(chapters).chapters)
    print(
        json.dumps(
            {
                "engine": engine,
                "chapters": chapters,
                "chars": chars,
                "rounds": rounds,
                "wall_plain_s": wall[0],
                "wall_readalong_s": wall[1],
                "wall_ratio": round(wall[1] / wall[0], 3),
                "worker_plain_s": worker[0],
                "worker_readalong_s": worker[1],
                "worker_ratio": round(worker[1] / worker[0], 3),
                "runs": runs,
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
