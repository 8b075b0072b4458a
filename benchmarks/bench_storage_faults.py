"""Storage faults injected under a real conversion, and what survived them.

A moto S3 server runs as its own process, with the fault-injecting proxy of
``tests/s3_server.py`` in front of it.  A book is converted s3 → s3 with the
chunk store on S3 by an embedded cluster of two worker processes, while the
proxy answers chunk-store requests with ``503 SlowDown`` for a while and then
``500 InternalError`` for a number of requests.  Counted: the faults injected,
whether the book finished, the chunks lost (unique chunks of the plan missing
from the store afterwards, must be 0), and the wall time against the same
conversion with no faults.  Prints one JSON line.

    python benchmarks/bench_storage_faults.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
CORPUS = REPO.parent / "shared" / "corpus"
BOOK = CORPUS / "entre-nous-lectures-francaises.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short chapters and fewer faults")
    args = parser.parse_args()
    from s3_server import CREDENTIALS, FaultProxy, moto_server

    os.environ.update(CREDENTIALS)
    import s3fs
    from distributed import Client

    import ebook2audio_dask as e2a

    chapters = [1, 2] if args.quick else list(range(1, 11))
    slow_s, errors = (2.0, 10) if args.quick else (5.0, 60)
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="e2a-storage-faults-"):
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
        for bucket in ("books", "audio", "chunks"):
            fs.mkdir(bucket)
        fs.put_file(str(BOOK), "books/book.txt")
        proxy = FaultProxy(endpoint)
        opts = {"s3": {"client_kwargs": {"endpoint_url": proxy.url}}}
        try:
            with e2a.local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:
                t0 = time.perf_counter()
                [clean] = e2a.convert(
                    "s3://books/book.txt",
                    "s3://audio/clean/",
                    chapters=chapters,
                    cache="s3://chunks/clean",
                    client=client,
                    storage_options=opts,
                )
                clean_s = time.perf_counter() - t0
                if not clean.ok:
                    raise SystemExit(f"the fault-free conversion failed: {clean.error}")
                # throttle every chunk-store request for a while, then fail a number of them
                proxy.fail(seconds=slow_s, match="/chunks/faults", status=503, code="SlowDown")
                t0 = time.perf_counter()
                fired = {"done": False}

                def later(_n: int) -> None:
                    if not fired["done"] and time.monotonic() >= proxy.until:
                        fired["done"] = True
                        throttled[0] = proxy.failed
                        proxy.fail(
                            count=errors, match="/chunks/faults", status=500, code="InternalError"
                        )

                throttled = [0]
                [faulty] = e2a.convert(
                    "s3://books/book.txt",
                    "s3://audio/faults/",
                    chapters=chapters,
                    cache="s3://chunks/faults",
                    client=client,
                    storage_options=opts,
                    progress=later,
                )
                faulty_s = time.perf_counter() - t0
        finally:
            proxy.close()
        fs.invalidate_cache()
        stored = {p.rsplit("/", 1)[-1][:-4] for p in fs.find("chunks/faults") if p.endswith(".wav")}
        wanted = clean.report["totals"]["unique_chunks"]
        lost = wanted - len(stored) if faulty.ok else None
    result = {
        "chapters": chapters,
        "chars": clean.report["totals"]["chars"],
        "unique_chunks": wanted,
        "clean_s": round(clean_s, 2),
        "faulty_s": round(faulty_s, 2),
        "faults_injected": proxy.failed,
        "throttled_503": throttled[0],
        "errors_500": proxy.failed - throttled[0],
        "book_ok": faulty.ok,
        "error": faulty.error,
        "chunks_lost": lost,
        "same_chunks": faulty.ok and faulty.report["totals"]["unique_chunks"] == wanted,
    }
    print(json.dumps(result))
    return 0 if faulty.ok and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
