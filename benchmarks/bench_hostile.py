"""Hostile and broken books, one by one: what each one gives, how fast, how much memory.

The cases are those of ``tests/test_hostile.py`` (built there, in a temporary
folder: truncated zips, XXE, billion laughs, zip bombs, ``../`` names, DRM,
5 MB paragraphs, bad UTF-8, fake covers...), plus the corpus's own broken
sample.  Each is read with :func:`ebook2audio_dask.read_book` in this process;
the outcome is the one-line error, or what was read.  Prints one JSON line.

    python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
CORPUS = REPO.parent / "shared" / "corpus"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    import dask
    import test_hostile  # the fixtures' builders and what each case must give

    from ebook2audio_dask import read_book
    from ebook2audio_dask.errors import BookError

    rows = []
    start = time.perf_counter()
    cases = dict(test_hostile.CASES)
    with tempfile.TemporaryDirectory(prefix="e2a-hostile-") as tmp:
        for name, case in cases.items():
            folder = Path(tmp) / name
            folder.mkdir()
            path = case.build(folder)
            with dask.config.set(dict(case.config)):
                tracemalloc.start()
                t0 = time.perf_counter()
                try:
                    book = read_book(str(path))
                except BookError as exc:
                    outcome, text = "error", exc.problem
                    one_line = "\n" not in str(exc) and str(exc).startswith(str(path))
                except Exception as exc:  # noqa: BLE001 - that is what is being measured
                    outcome, text, one_line = "undocumented", f"{type(exc).__name__}: {exc}", False
                else:
                    outcome, one_line = "read", True
                    text = (
                        f"{len(book.chapters)} chapter(s), {book.chars} chars, "
                        f"cover {bool(book.cover)}"
                    )
                seconds = time.perf_counter() - t0
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            if case.error is not None:
                expected = outcome == "error" and re.search(case.error, text) is not None
            else:
                expected = outcome == "read" or (case.either and outcome == "error")
            rows.append(
                {
                    "case": name,
                    "outcome": outcome,
                    "message": text[:200],
                    "one_line": one_line,
                    "as_expected": bool(expected),
                    "seconds": round(seconds, 3),
                    "peak_mib": round(peak / 2**20, 1),
                }
            )
    broken = CORPUS / "broken-xhtml-epubsample007.epub"
    if broken.is_file():
        try:
            book = read_book(str(broken))
            rows.append({"case": "corpus: broken-xhtml-epubsample007.epub", "outcome": "read",
                         "message": f"{len(book.chapters)} chapter(s) recovered", "one_line": True,
                         "as_expected": True, "seconds": None, "peak_mib": None})  # fmt: skip
        except BookError as exc:
            rows.append({"case": "corpus: broken-xhtml-epubsample007.epub", "outcome": "error",
                         "message": exc.problem, "one_line": True, "as_expected": True,
                         "seconds": None, "peak_mib": None})  # fmt: skip
    result = {
        "cases": len(rows),
        "errors": sum(r["outcome"] == "error" for r in rows),
        "read": sum(r["outcome"] == "read" for r in rows),
        "undocumented": sum(r["outcome"] == "undocumented" for r in rows),
        "unexpected": sum(not r["as_expected"] for r in rows),
        "not_one_line": sum(not r["one_line"] for r in rows),
        "max_seconds": max(r["seconds"] or 0 for r in rows),
        "max_peak_mib": max(r["peak_mib"] or 0 for r in rows),
        "wall_s": round(time.perf_counter() - start, 2),
        "results": rows,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
