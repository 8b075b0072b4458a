"""``ebook2audio serve`` under load, and a job through the server against ``convert``.

(1) **Load**: a real ``ebook2audio serve`` process (tests/serve_helpers.ServerProcess, its
embedded cluster, the ``fake`` test engine so the cluster is not the bottleneck) and
50 concurrent API clients (asyncio + httpx, one connection each) on loopback for 60 s.
Each client loops (bounded: until the deadline, at most 1,000 rounds): upload a small
text book, create a job (WAV output), then poll ``GET /api/jobs/{id}`` and ``GET /api/jobs``
every second until the job is finished.  Figures: errors (a non-2xx answer or a failed
request; target 0) and the p95 latency of the GET requests (target < 100 ms).

(2) **Job vs convert**: chapters 2-3 of the sample book with espeak, each side with a cold
chunk store: (a) ``python -m ebook2audio_dask convert`` as a subprocess, spawn to exit;
(b) through a server started beforehand (fresh data folder, so an empty chunk store):
upload, create the job, follow its events, download its outputs, timed from the upload's
start to the last byte.  Figure (b)/(a), one run each; target <= 1.05.  The server's start
(spawn to ``/healthz``) is in the details: a server pays for its cluster once, not per job.

Prints one JSON line.

    python benchmarks/bench_serve.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
BOOK = REPO / "examples" / "childrens-literature.epub"
CHAPTERS = "2-3"
#: Spoken first on each side (not timed): the workers load the engine.
WARM_UP = 4
ENGINE = "espeak"
TOKEN = "bench-serve-token-0123456789"
#: Seconds between two polls of a client (its job, then the queue), as a page or script would.
POLL_S = 1.0
TEXT = (
    "The Server Benchmark\n\n"
    + "\n\n".join(
        f"Paragraph {i}. A short paragraph that the fake engine speaks as a tone, so the "
        "cluster is never what the clients wait for."
        for i in range(1, 6)
    )
    + "\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


async def client_loop(url: str, book: bytes, deadline: float, stats: dict, index: int) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:

        async def call(method: str, path: str, route: str, parse: bool = True, **kwargs):
            start = time.perf_counter()
            try:
                r = await http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                stats["errors"].append(f"{method} {path}: {type(exc).__name__}: {exc}")
                return None
            elapsed = time.perf_counter() - start  # the body is read: the whole answer
            if method == "GET":
                stats["get_s"].append(elapsed)
            stats["by_route"].setdefault(f"{method} {route}", []).append(elapsed)
            stats["requests"] += 1
            if not r.is_success:
                stats["errors"].append(f"{method} {path}: {r.status_code} {r.text[:200]}")
                return None
            return r.json() if parse else True  # the queue's list is not parsed: client time

        for _ in range(1000):  # bounded
            if time.monotonic() >= deadline:
                return
            up = await call(
                "POST", "/api/uploads", "/api/uploads", params={"filename": f"client{index}.txt"},
                content=book, headers={"Content-Type": "application/octet-stream"},
            )  # fmt: skip
            if up is None:
                await asyncio.sleep(0.25)
                continue
            body = {"books": [{"upload_id": up["id"], "chapters": None}],
                    "options": {"engine": "fake", "format": "wav"}}  # fmt: skip
            job = await call("POST", "/api/jobs", "/api/jobs", json=body)
            if job is None:
                continue
            stats["jobs"] += 1
            while time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
                got = await call("GET", f"/api/jobs/{job['id']}", "/api/jobs/{id}")
                await call("GET", "/api/jobs", "/api/jobs", parse=False)
                if got is not None and got["state"] in ("done", "failed", "cancelled"):
                    stats["finished"] += 1
                    stats["failed_jobs"] += got["state"] != "done"
                    break


def load(seconds: float, clients: int) -> dict:
    from serve_helpers import ServerProcess

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        server = ServerProcess(Path(tmp) / "data", token=TOKEN).start()
        try:
            stats = {"errors": [], "get_s": [], "by_route": {}, "requests": 0, "jobs": 0,
                     "finished": 0, "failed_jobs": 0}  # fmt: skip
            deadline = time.monotonic() + seconds
            book = TEXT.encode()

            async def run() -> None:
                await asyncio.gather(
                    *(client_loop(server.url, book, deadline, stats, i) for i in range(clients))
                )

            start = time.perf_counter()
            asyncio.run(run())
            wall = time.perf_counter() - start
        finally:
            server.stop()
    gets = stats["get_s"]
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": stats["requests"],
        "get_requests": len(gets),
        "jobs_submitted": stats["jobs"],
        "jobs_finished": stats["finished"],
        "jobs_failed": stats["failed_jobs"],
        "errors": len(stats["errors"]),
        "first_errors": stats["errors"][:5],
        "get_p50_ms": round(percentile(gets, 0.50) * 1000, 1),
        "get_p95_ms": round(percentile(gets, 0.95) * 1000, 1),
        "get_max_ms": round(max(gets) * 1000, 1) if gets else None,
        "p95_ms_by_route": {
            route: round(percentile(times, 0.95) * 1000, 1)
            for route, times in stats["by_route"].items()
        },
    }


def job_vs_convert() -> dict:
    """A job through the server against ``convert`` of the same chapters, cold chunk store each.

    The figure compares like with like: a server whose 2-worker cluster has already
    spoken (engines loaded) against ``convert(client=...)`` on a 2-worker embedded
    cluster that has too, so it is what the server path adds (upload, the book's
    summary, the queue, events, download).  The command line's spawn-to-exit
    ``convert`` (cluster start included) is in the details.
    """
    from serve_helpers import ServerProcess

    import ebook2audio_dask as e2a
    from ebook2audio_dask.serve.client import ServerClient

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "ebook2audio_dask", "convert", str(BOOK), "--chapters",
               CHAPTERS, "--engine", ENGINE, "-o", str(tmp / "convert"), "--cache",
               str(tmp / "convert-cache"), "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        cli_s = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"convert failed: {proc.stderr[-2000:]}")
        report = json.loads((tmp / "convert" / "childrens-literature.report.json").read_text())

        # convert on a warm embedded cluster of 2 workers
        from distributed import Client

        with e2a.local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as c:
            e2a.convert(str(BOOK), str(tmp / "warm-up"), chapters=[WARM_UP], engine=ENGINE,
                        cache=str(tmp / "warm-up-cache"), client=c)  # fmt: skip
            start = time.perf_counter()
            results = e2a.convert(str(BOOK), str(tmp / "convert-warm"), chapters=[2, 3],
                                  engine=ENGINE, cache=str(tmp / "convert-warm-cache"),
                                  client=c)  # fmt: skip
            convert_s = time.perf_counter() - start
        if not results[0].ok:
            raise SystemExit(f"convert failed: {results[0].error}")

        start = time.perf_counter()
        server = ServerProcess(tmp / "data", "--workers", "2", token=TOKEN).start()
        server_start_s = time.perf_counter() - start
        try:
            with ServerClient(server.url, TOKEN) as client:

                def job(chapters: str) -> tuple[dict, float]:
                    start = time.perf_counter()
                    upload = client.upload(BOOK)
                    created = client.create_job(
                        [{"upload_id": upload["id"], "chapters": chapters}], {"engine": ENGINE}
                    )
                    done = list(client.events(created["id"]))[-1]
                    out = tmp / f"server-out-{created['id']}"
                    out.mkdir()
                    for book in done["books"]:
                        for f in book["files"]:
                            client.download(done["id"], book["index"], f["name"], out)
                    return done, time.perf_counter() - start

                job(str(WARM_UP))  # the workers load the engine
                done, job_s = job(CHAPTERS)
        finally:
            server.stop()
        if done["state"] != "done":
            raise SystemExit(f"the server's job ended {done['state']}: {done}")
    return {
        "chapters": CHAPTERS,
        "engine": ENGINE,
        "chars": sum(c["chars"] for c in report["chapters"]),
        "convert_s": round(convert_s, 2),
        "server_job_s": round(job_s, 2),
        "ratio": round(job_s / convert_s, 3),
        "cli_convert_s": round(cli_s, 2),
        "cli_convert_report_wall_s": report["totals"]["wall_s"],
        "server_start_s": round(server_start_s, 2),
        "ratio_vs_cli": round(job_s / cli_s, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s of load, 10 clients")
    parser.add_argument("--seconds", type=float, help="load duration (default 60)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 50)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    clients = args.clients or (10 if args.quick else 50)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    out = {"load": load(seconds, clients), "job": job_vs_convert()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
