"""Peak memory of reading and planning plain text, and of a spine that repeats a document.

Issue 14, item 7: a 300 MB ``.txt`` reached 6.3 GB summed RSS, and
``inspect`` alone 1.45 GB.  Every case here runs in a fresh child process,
and its peak RSS is the kernel's ``ru_maxrss`` of that child alone (from
``os.wait4``):

* **inspect**: ``python -m ebook2audio_dask inspect BOOK``;
* **plan**: ``python -m ebook2audio_dask cache prune --cache <empty folder>
  --keep BOOK --engine espeak --dry-run``, which reads the book and plans it
  as ``convert`` does (``parse_task``, then ``plan_task``: sentences, spoken
  forms, content keys) and speaks nothing;
* **base**: both commands on a 3 kB text, the interpreter's and imports' own
  memory, subtracted in the ratios;
* **refused**: ``inspect`` of each text over the default
  ``ingest.max-text-size``, with the default configuration: exit status,
  time and the one-line message;
* **spine**: ``inspect`` of a tiny EPUB whose spine lists one document 1,000
  times.

The texts are generated: Gutenberg-style prose (a header and the START
line, ``CHAPTER <roman>.`` headings every ~300 kB, paragraphs wrapped at 70
columns) cycling through the paragraphs of the corpus's
``entre-nous-lectures-francaises.txt`` (French, curly apostrophes and dashes,
so most paragraphs are 2 bytes a character in Python, as in a modern UTF-8
book).  Texts over the default limit are measured with
``DASK_EBOOK2AUDIO__INGEST__MAX_TEXT_SIZE=4GiB``.

Prints one JSON line.  Usage::

    python benchmarks/bench_ingest_memory.py                  # 10, 100, 300 MB
    python benchmarks/bench_ingest_memory.py --sizes 1,3      # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import roman, wrap  # noqa: E402

CORPUS_TEXT = (REPO / ".." / "shared" / "corpus" / "entre-nous-lectures-francaises.txt").resolve()
MB = 1_000_000
RAISED = {"DASK_EBOOK2AUDIO__INGEST__MAX_TEXT_SIZE": "4GiB"}
SPINE_REPEATS = 1000
CHAPTER_BYTES = 300_000


def write_text(path: Path, size: int) -> dict:
    """Write a generated book of *size* UTF-8 bytes (see the module docstring)."""
    text = CORPUS_TEXT.read_text(encoding="utf-8-sig")
    body = text.split("*** START OF")[1].split("\n", 1)[1].split("End of the Project Gutenberg")[0]
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
    paragraphs = [
        (wrap(p) + "\n\n").encode() for p in paragraphs if len(p) > 60 and "Produced by" not in p
    ]
    head = (b"Title: Generated\nAuthor: Bench\nLanguage: French\n\n"
            b"*** START OF THE PROJECT GUTENBERG EBOOK GENERATED ***\n\n")  # fmt: skip
    total, chapters, k = 0, 0, 0
    with open(path, "wb") as fh:
        total += fh.write(head)
        while total < size:
            chapters += 1
            total += fh.write(f"\n\n\n\nCHAPTER {roman(chapters)}.\n\n".encode())
            start = total
            while total - start < CHAPTER_BYTES and total < size:
                total += fh.write(paragraphs[k % len(paragraphs)])
                k += 1
    return {"bytes": total, "chapters": chapters, "paragraphs": k}


def write_spine_epub(path: Path, repeats: int) -> int:
    """A valid EPUB 3 with one ~5 kB chapter that the spine lists *repeats* times."""
    prose = " ".join(["The same chapter again, read as many times as the spine says."] * 80)
    files = {
        "META-INF/container.xml": (
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>"
        ),
        "OEBPS/content.opf": (
            '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" '
            'version="3.0" unique-identifier="id">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
            '<dc:identifier id="id">spine-repeat</dc:identifier><dc:title>Repeated</dc:title>'
            "<dc:language>en</dc:language></metadata><manifest>"
            '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
            '<item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest><spine>'
            + '<itemref idref="c1"/>' * repeats
            + "</spine></package>"
        ),
        "OEBPS/nav.xhtml": (
            '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
            'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Nav</title></head><body>'
            '<nav epub:type="toc"><ol><li><a href="c1.xhtml">One</a></li></ol></nav></body></html>'
        ),
        "OEBPS/c1.xhtml": (
            '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
            f"<head><title>One</title></head><body><h1>One</h1><p>{prose}</p></body></html>"
        ),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", zipfile.ZIP_STORED)
        for name, data in files.items():
            zf.writestr(name, data)
    return path.stat().st_size


def measure(args: list[str], *, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run ``python -m ebook2audio_dask ARGS``; its wall time, exit status, peak RSS, output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        cmd = [sys.executable, "-m", "ebook2audio_dask", *args]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, start_new_session=True,
                                env={**os.environ, **(env or {})})  # fmt: skip
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode < 0:
        raise RuntimeError(f"{' '.join(args)}: killed ({proc.returncode}) after {wall:.0f} s")
    return {
        "wall_s": round(wall, 2),
        "rc": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # kB on Linux
        "stdout_lines": stdout.count("\n"),
        "stderr": stderr.strip()[-400:],
    }


def default_text_limit() -> int:
    from dask.utils import parse_bytes

    from ebook2audio_dask import config

    return parse_bytes(config.get("ingest.max-text-size"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,300", help="text sizes in MB (10^6 bytes)")
    parser.add_argument("--workdir", type=Path, help="where the texts are written (deleted after)")
    args = parser.parse_args(argv)

    limit = default_text_limit()
    work = Path(tempfile.mkdtemp(prefix="e2a-ingest-memory-", dir=args.workdir))
    try:
        cache = work / "empty-cache"
        cache.mkdir()
        tiny = work / "tiny.txt"
        write_text(tiny, 3000)

        def inspect(book: Path, env=None) -> dict:
            return measure(["inspect", str(book)], env=env)

        def plan(book: Path, env=None) -> dict:
            return measure(["cache", "prune", "--cache", str(cache), "--keep", str(book),
                            "--engine", "espeak", "--dry-run"], env=env)  # fmt: skip

        base = {"inspect": inspect(tiny), "plan": plan(tiny)}
        for name, row in base.items():
            if row["rc"] != 0:
                raise RuntimeError(f"base {name}: exit {row['rc']}: {row['stderr']}")
        rows = []
        for size_mb in (float(s) for s in args.sizes.split(",")):
            book = work / f"text-{size_mb:g}MB.txt"
            made = write_text(book, int(size_mb * MB))
            row = {"size_mb": size_mb, **made, "over_default_limit": made["bytes"] > limit}
            env = RAISED if row["over_default_limit"] else None
            if row["over_default_limit"]:
                row["refused"] = inspect(book)
                row["refused"]["stderr"] = row["refused"]["stderr"].replace(f"{work}/", "")
            for name, fn in (("inspect", inspect), ("plan", plan)):
                result = fn(book, env)
                if result["rc"] != 0:
                    raise RuntimeError(f"{name} {size_mb:g} MB: {result['rc']}: {result['stderr']}")
                result["x_size"] = round(result["peak_rss_mb"] * 2**20 / made["bytes"], 2)
                result["x_size_above_base"] = round(
                    (result["peak_rss_mb"] - base[name]["peak_rss_mb"]) * 2**20 / made["bytes"], 2
                )
                row[name] = result
                print(f"{name} {size_mb:g} MB: {result}", file=sys.stderr, flush=True)
            book.unlink()
            rows.append(row)
        epub = work / "spine-repeat.epub"
        spine = {"repeats": SPINE_REPEATS, "epub_bytes": write_spine_epub(epub, SPINE_REPEATS)}
        spine["inspect"] = inspect(epub)
        print(json.dumps({"limit_bytes": limit, "base": base, "texts": rows, "spine": spine}),
              flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
