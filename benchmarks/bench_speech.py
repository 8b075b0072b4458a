"""``POST /v1/audio/speech`` of a 2,000-character input: 2 workers vs 1 (target >= 1.6x faster).

A real ``ebook2audio serve`` process (embedded cluster of N workers, one engine
thread each, an empty chunk store under its own data folder) is asked for
2,000-character passages of the sample book (cut at sentence ends) with
Piper (``model="piper"``, ``response_format="wav"``).  A first request of
another passage loads the engine on every worker (not timed); each timed
request is a passage that server has not spoken before, so every chunk is
synthesised (cold chunk store).  Both servers speak the same passages.
Figures: the median wall time of the timed requests with 1 and with 2
workers, and their ratio; the machine's cores and its load average after
each (other work on a small machine takes the second worker's core).
Prints one JSON line.

    python benchmarks/bench_speech.py [--rounds 3] [--chars 2000] [--quick]
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
sys.path.insert(0, str(HERE.parent / "tests"))
BOOK = HERE.parent / "examples" / "childrens-literature.epub"


def passages(n: int, chars: int) -> list[str]:
    """*n* different passages of at least *chars* characters (whole sentences) of the book."""
    from ebook2audio_dask import read_book
    from ebook2audio_dask.text.segment import split_sentences

    out: list[str] = []
    current = ""
    for chapter in read_book(str(BOOK)).chapters:
        for paragraph in chapter.paragraphs:
            for sentence in split_sentences(" ".join(paragraph.split()), "en"):
                current = f"{current} {sentence}".strip()
                if len(current) >= chars:
                    out.append(current)
                    current = ""
                    if len(out) == n:
                        return out
    raise SystemExit(f"{BOOK} has fewer than {n} passages of {chars} characters")


def timed_requests(workers: int, texts: list[str], warm: str) -> list[float]:
    """Wall times of ``/v1/audio/speech`` for *texts* on a fresh server of *workers* workers."""
    from serve_helpers import ServerProcess

    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        server = ServerProcess(Path(tmp) / "data", "--n-workers", str(workers))
        server.start()
        try:
            with server.client(timeout=600) as http:

                def say(text: str) -> float:
                    body = {"model": "piper", "voice": "alloy", "input": text,
                            "response_format": "wav"}  # fmt: skip
                    t0 = time.perf_counter()
                    r = http.post("/v1/audio/speech", json=body,
                                  headers={"Authorization": "Bearer bench"})  # fmt: skip
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise SystemExit(f"speech failed: {r.status_code} {r.text[:300]}")
                    return elapsed

                say(warm)  # loads piper on every worker
                return [say(text) for text in texts]
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed requests per cluster size")
    parser.add_argument("--chars", type=int, default=2000, help="characters per request")
    parser.add_argument("--quick", action="store_true", help="1 round of 600 characters")
    args = parser.parse_args()
    rounds, chars = (1, 600) if args.quick else (args.rounds, args.chars)
    texts = passages(rounds + 1, chars)  # the same passages on each (fresh) server
    out: dict = {"chars": chars, "rounds": rounds, "engine": "piper", "target": 1.6,
                 "cores": os.cpu_count()}  # fmt: skip
    for workers in (1, 2):
        times = timed_requests(workers, texts[1:], texts[0])
        out[f"workers_{workers}"] = {"wall_s": [round(t, 3) for t in times],
                                     "median_s": round(statistics.median(times), 3),
                                     # other work on the machine: 1-minute load average after
                                     "load_after": round(os.getloadavg()[0], 2)}  # fmt: skip
    out["speedup"] = round(out["workers_1"]["median_s"] / out["workers_2"]["median_s"], 3)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
