"""Chunk-store overhead: rebuilding a fully cached book, from a local store and from S3 (moto).

1. A ~100k-character book (the first stories of *The Adventures of Sherlock
   Holmes*) is converted with Piper on an embedded cluster of 2 workers into
   an empty local chunk store: the synthesis run.
2. It is converted again into a new output folder: every chunk is found in
   the store by one listing, and the book's encoded audio, kept there by the
   first run, is remuxed with chapters, tags and cover: the rebuild.  Then
   once more without the kept audio: every chunk is read (concurrently, in
   windows) and the M4B encoded again.
3. The store is copied to a moto S3 server (a separate process on 127.0.0.1)
   and the book is rebuilt from there, the output also on S3.

Figures: rebuild time / synthesis time (target < 10 %), and the rebuild's
time per chunk.  Prints one JSON line.
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
sys.path.insert(0, str(HERE.parent / "tests"))
BOOK = (
    HERE.parent / ".." / "shared" / "corpus" / "adventures-of-sherlock-holmes-standardebooks.epub"
).resolve()


def chapters_for(chars: int) -> list[int]:
    from ebook2audio_dask import read_book

    total, picked = 0, []
    for c in read_book(str(BOOK)).chapters:
        if total >= chars:
            break
        picked.append(c.index)
        total += c.chars
    return picked


def timed_convert(client, out: str, cache: str, chapters, storage_options=None) -> dict:
    import ebook2audio_dask as e2a

    t0 = time.perf_counter()
    [r] = e2a.convert(
        str(BOOK) if not out.startswith("s3://") else "s3://books/book.epub",
        out,
        chapters=chapters,
        client=client,
        cache=cache,
        storage_options=storage_options,
    )
    wall = time.perf_counter() - t0
    if not r.ok:
        raise SystemExit(f"convert failed: {r.error}")
    t = r.report["totals"]
    return {
        "wall_s": round(wall, 2),
        "chars": t["chars"],
        "chunks": t["unique_chunks"],
        "from_cache": t["chunks_from_cache"],
        "audio_s": t["audio_s"],
        "merge_s": t["merge_s"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.chars = 8000
    from s3_server import CREDENTIALS, moto_server

    os.environ.update(CREDENTIALS)
    import s3fs
    from distributed import Client

    import ebook2audio_dask as e2a

    chapters = chapters_for(args.chars)
    out: dict = {"chapters": chapters}
    with (
        tempfile.TemporaryDirectory(prefix="e2a-bench-cache-") as tmp,
        e2a.local_cluster(2, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        store = os.path.join(tmp, "store")
        out["synthesis"] = timed_convert(client, os.path.join(tmp, "out1"), store, chapters)
        out["rebuild_local"] = timed_convert(client, os.path.join(tmp, "out2"), store, chapters)
        # the same with the kept encoded audio removed: every chunk read and encoded again
        from ebook2audio_dask.storage import ChunkStore

        cs = ChunkStore.make(store)
        cs.delete([e.path for e in cs.entries() if e.kind == "audio"])
        out["rebuild_local_reencode"] = timed_convert(
            client, os.path.join(tmp, "out3"), store, chapters
        )
        with moto_server() as endpoint:
            opts = {"s3": {"client_kwargs": {"endpoint_url": endpoint}}}
            fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
            fs.mkdir("books")
            fs.mkdir("chunks")
            fs.put_file(str(BOOK), "books/book.epub")
            t0 = time.perf_counter()
            fs.put(store + "/", "chunks/store/", recursive=True)
            out["upload_store_s"] = round(time.perf_counter() - t0, 2)
            out["rebuild_s3"] = timed_convert(
                client, "s3://chunks/out/", "s3://chunks/store", chapters, opts
            )
    synth = out["synthesis"]["wall_s"]
    for side in ("rebuild_local", "rebuild_local_reencode", "rebuild_s3"):
        r = out[side]
        r["ratio"] = round(r["wall_s"] / synth, 4)
        r["ms_per_chunk"] = round(r["wall_s"] / max(1, r["chunks"]) * 1000, 2)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
