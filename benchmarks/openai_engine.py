"""The ``openai`` engine against calling the same server directly.

A real OpenAI-compatible speech server (``tests/openai_server.py``: espeak-ng
behind ``POST /v1/audio/speech``, its own process on 127.0.0.1) speaks the
chunks of a real book, planned as the pipeline plans them for ``--engine
openai``.  Three ways, on the same server process, one after the other:

(a) direct loop: one ``requests`` session posts each chunk and reads its WAV
    (``decode_wav``), one at a time — what a script calling the API does;
(b) the engine: ``OpenAIEngine.synthesize`` with ``concurrency`` 4, called with
    the groups a synthesize task hands it (``length_buckets`` with the
    engine's ``batch_size`` and ``length_spread``);
(c) direct, 4 threads: the loop of (a) in a pool of 4 threads, one session each
    — the same concurrency without the engine (its overhead).

Twice: as the server is (espeak answers in milliseconds, one at a time under
its lock: the cost is HTTP and Python on 2 cores), and with 200 ms added to
every answer (a remote or GPU server's round trip and queue).  Prints one JSON
line; the figure is (a) / (b).

    python benchmarks/openai_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
BOOK = REPO.parent / "shared" / "corpus" / "childrens-literature.epub"
CONCURRENCY = 4


def plan_chunks(chapters: tuple[int, ...]) -> tuple[list[str], int]:
    """The unique chunk texts of *chapters*, planned as ``--engine openai`` plans them."""
    import dask

    from ebook2audio_dask import config
    from ebook2audio_dask.pipeline.options import ConvertOptions
    from ebook2audio_dask.pipeline.tasks import parse_task, plan_task

    with dask.config.set({"ebook2audio.openai.endpoints": ["http://127.0.0.1:1/v1"]}):
        options = ConvertOptions(output="unused", chapters=chapters, engine="openai", voice="alloy")
        book = parse_task(str(BOOK), bool(config.get("include-matter", override=None)), None)
        plan = plan_task(book, options.plan_request())
    texts = list({c.key: c.text for c in plan.chunks}.values())
    return texts, plan.chars


def measure(texts: list[str], latency: float) -> dict:
    """(a), (b) and (c) on one server process with *latency* seconds added per answer."""
    import requests
    from openai_server import SpeechServer

    from ebook2audio_dask.audio.wav import decode_wav
    from ebook2audio_dask.engines.openai import OpenAIEngine
    from ebook2audio_dask.pipeline.tasks import length_buckets

    body = {"model": "tts-1", "voice": "alloy", "response_format": "wav"}
    load = round(os.getloadavg()[0], 2)

    def post(session, text: str) -> int:
        response = session.post(url, json=dict(body, input=text), timeout=120)
        response.raise_for_status()
        return len(decode_wav(response.content)[0])

    with tempfile.TemporaryDirectory(prefix="e2a-openai-bench-") as work, \
            SpeechServer(Path(work), latency=latency) as server:  # fmt: skip
        url = server.url + "/audio/speech"
        with requests.Session() as session:
            post(session, "Warming up.")  # server and client both warm before any clock starts
            t0 = time.perf_counter()
            direct = sum(post(session, t) for t in texts)
            direct_s = time.perf_counter() - t0

        runtime = {"endpoints": (url,), "concurrency": CONCURRENCY, "timeout": 120.0, "retries": 6,
                   "retry-seconds": 300.0}  # fmt: skip
        engine = OpenAIEngine("alloy", {"language": "en"}, model="tts-1", runtime=runtime)
        engine.synthesize(["Warming up."])
        items = tuple((str(i), t) for i, t in enumerate(texts))
        t0 = time.perf_counter()
        ours = 0
        for group in length_buckets(items, engine.batch_size, spread=engine.length_spread):
            ours += sum(len(a) for a in engine.synthesize([t for _, t in group]))
        engine_s = time.perf_counter() - t0
        engine.close()

        sessions: dict[int, requests.Session] = {}

        def pooled(text: str) -> int:
            import threading

            session = sessions.setdefault(threading.get_ident(), requests.Session())
            return post(session, text)

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(pooled, ["Warming up."] * CONCURRENCY))
            t0 = time.perf_counter()
            pooled_samples = sum(pool.map(pooled, texts))
            pooled_s = time.perf_counter() - t0
        for session in sessions.values():
            session.close()
        requests_seen = len([e for e in server.log() if "text" in e])
    return {
        "latency_s": latency,
        "loadavg_before": load,
        "direct_s": round(direct_s, 3),
        "engine_s": round(engine_s, 3),
        "direct_4_threads_s": round(pooled_s, 3),
        "ratio": round(direct_s / engine_s, 3),
        "ratio_vs_4_threads": round(pooled_s / engine_s, 3),
        "audio_s": round(ours / engine.sample_rate, 1),
        "same_audio_length": max(abs(ours - direct), abs(pooled_samples - direct)) <= 0.01 * direct,
        "requests": requests_seen,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one chapter, one latency")
    args = parser.parse_args()
    chapters = (2,) if args.quick else (2, 3, 4)
    texts, chars = plan_chunks(chapters)
    rows = [measure(texts, latency) for latency in ((0.2,) if args.quick else (0.0, 0.2))]
    print(json.dumps({"chapters": list(chapters), "chars": chars, "chunks": len(texts),
                      "concurrency": CONCURRENCY, "rows": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
