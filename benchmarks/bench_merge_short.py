"""The merge of a 1-minute book (issue 16, item 3: target ≤ 0.4 s).

Input: a generated EPUB 3 with a cover (the PNG cover of the corpus's
``childrens-literature.epub``, 41 kB) and two chapters of real prose (the
first paragraphs of *The Adventures of Sherlock Holmes*, ~750 characters in
all, cut between sentences), about one minute of eSpeak audio with the
pauses.  One cluster as the embedded one (``local_cluster(2)`` of
``ebook2audio_dask.cluster``: 2 worker processes) serves every run, so each
merge runs in a warm worker:

1. **fresh**: ``convert`` with an empty chunk store; the report's
   ``totals.merge_s`` is the merge's time after the last chunk it waited for
   was ready (its tail on the critical path).
2. **cached** × ``--runs`` (default 5): ``convert`` again into a new output
   folder with every chunk in the store and ``merge.keep-encoded`` off
   (``DASK_EBOOK2AUDIO__MERGE__KEEP_ENCODED=False``, set before the cluster
   starts), so each merge reads the chunks and encodes the M4B again rather
   than remuxing kept audio (checked: ``audio_reused`` false, every chunk
   from the cache).  With nothing to wait for, ``merge_s`` is the whole
   merge: read the chunks, encode, write chapters, tags and cover, publish.
   Also taken from Dask's task stream (``client.get_task_stream``): the
   compute time of every task whose key starts with ``merge``, summed per
   run, as a check that does not depend on the report.

Figure: the median of the cached runs' ``merge_s``.  The merge task is not
called directly in-process: its arguments (the batches' Dask Variables, the
store listing) are the graph's internals, which change with it.

Prints one JSON line.  Usage::

    python benchmarks/bench_merge_short.py [--runs 5] [--chars 750]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = (HERE.parent / ".." / "shared" / "corpus").resolve()
COVER_FROM = CORPUS / "childrens-literature.epub"
COVER_MEMBER = "EPUB/images/cover.png"

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf"
  media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def _xhtml(title: str, body: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" '
            f'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>{escape(title)}</title></head>'
            f"<body>{body}</body></html>")  # fmt: skip


def make_epub(path: Path, chars: int) -> dict:
    """Two chapters of ~*chars* characters in all, with a cover; returns what went in."""
    sys.path.insert(0, str(HERE))
    from bench_library import Prose

    prose = Prose()
    chapters = [
        ("The First Chapter", prose.chapter(chars // 2)),
        ("The Second Chapter", prose.chapter(chars // 2)),
    ]
    cover = zipfile.ZipFile(COVER_FROM).read(COVER_MEMBER)
    manifest = [
        '<item id="cover" href="cover.png" media-type="image/png" properties="cover-image"/>',
        '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>',
    ]
    spine, nav, files = [], [], {}
    for i, (title, paras) in enumerate(chapters, 1):
        name = f"ch{i}.xhtml"
        files[name] = _xhtml(
            title, f"<h1>{escape(title)}</h1>" + "".join(f"<p>{escape(p)}</p>" for p in paras)
        )
        manifest.append(f'<item id="c{i}" href="{name}" media-type="application/xhtml+xml"/>')
        spine.append(f'<itemref idref="c{i}"/>')
        nav.append(f'<li><a href="{name}">{escape(title)}</a></li>')
    files["nav.xhtml"] = _xhtml("Contents", f'<nav epub:type="toc"><ol>{"".join(nav)}</ol></nav>')
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">bench-merge-short</dc:identifier><dc:title>A Short Book</dc:title>'
        "<dc:creator>Arthur Conan Doyle</dc:creator><dc:language>en</dc:language></metadata>"
        f"<manifest>{''.join(manifest)}</manifest><spine>{''.join(spine)}</spine></package>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr("META-INF/container.xml", CONTAINER)
        zf.writestr("OEBPS/content.opf", opf)
        zf.writestr("OEBPS/cover.png", cover)
        for name, text in files.items():
            zf.writestr(f"OEBPS/{name}", text)
    return {"chars": sum(len(p) for _, paras in chapters for p in paras), "cover_bytes": len(cover)}


def _merge_compute_s(stream: list[dict]) -> float | None:
    """Summed compute time of the merge tasks in a task stream (None: no task named merge*)."""
    total, found = 0.0, False
    for rec in stream:
        key = rec.get("key")
        name = key[0] if isinstance(key, tuple) else str(key)
        if not str(name).startswith("merge"):
            continue
        for ss in rec.get("startstops", ()):
            if ss.get("action") == "compute":
                total += ss["stop"] - ss["start"]
                found = True
    return round(total, 3) if found else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cached re-encoding runs (default 5)")
    parser.add_argument(
        "--chars", type=int, default=750, help="characters of text (~1 min of eSpeak audio)"
    )
    parser.add_argument("--quick", action="store_true", help="3 cached runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 3
    # before dask is imported, so the worker processes read it too
    os.environ["DASK_EBOOK2AUDIO__MERGE__KEEP_ENCODED"] = "False"
    from distributed import Client, get_task_stream

    import ebook2audio_dask as e2a
    from ebook2audio_dask import config
    from ebook2audio_dask.cluster import local_cluster

    if config.get("merge.keep-encoded", True):
        raise SystemExit("merge.keep-encoded is still on: the cached runs would only remux")
    runs = []
    with tempfile.TemporaryDirectory(prefix="e2a-merge-short-") as tmp:
        book = Path(tmp) / "short-book.epub"
        made = make_epub(book, args.chars)
        cache = str(Path(tmp) / "chunks")
        with local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:
            client.wait_for_workers(2)
            for i in range(args.runs + 1):
                with get_task_stream(client) as ts:
                    t0 = time.perf_counter()
                    (result,) = e2a.convert(
                        [str(book)],
                        str(Path(tmp) / f"out-{i}"),
                        engine="espeak",
                        cache=cache,
                        client=client,
                    )
                    wall = time.perf_counter() - t0
                if not result.ok:
                    raise SystemExit(f"conversion failed: {result.error}")
                t = result.report["totals"]
                run = {
                    "run": "fresh" if i == 0 else "cached",
                    "merge_s": t["merge_s"],
                    "merge_task_compute_s": _merge_compute_s(ts.data),
                    "convert_wall_s": round(wall, 3),
                    "audio_reused": t["audio_reused"],
                    "chunks": t["chunks"],
                    "chunks_from_cache": t["chunks_from_cache"],
                }
                if i == 0 and t["chunks_from_cache"]:
                    raise SystemExit(f"the fresh run found chunks in its empty store: {t}")
                if i > 0 and (t["audio_reused"] or t["chunks_from_cache"] != t["unique_chunks"]):
                    raise SystemExit(f"cached run {i} did not re-encode from cached chunks: {t}")
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
        report = result.report
        from mutagen.mp4 import MP4

        has_cover = "covr" in (MP4(report["output"]).tags or {})
    cached = [r["merge_s"] for r in runs[1:]]
    streamed = [
        r["merge_task_compute_s"] for r in runs[1:] if r["merge_task_compute_s"] is not None
    ]
    out = {
        "chars": report["totals"]["chars"],
        "epub_chars": made["chars"],
        "cover_bytes": made["cover_bytes"],
        "n_chapters": len(report["chapters"]),
        "cover_in_m4b": has_cover,
        "audio_s": report["totals"]["audio_s"],
        "chunks": report["totals"]["chunks"],
        "fresh_merge_s": runs[0]["merge_s"],
        "cached_merge_s": cached,
        "median_merge_s": round(statistics.median(cached), 3),
        "median_merge_task_compute_s": round(statistics.median(streamed), 3) if streamed else None,
        "runs": runs,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
