"""The per-book JSON report: the single source of a conversion's figures."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from ..errors import one_line
from ..text.chunk import BookPlan
from .results import BatchResult, MergeResult

__all__ = [
    "REPORT_VERSION",
    "build_report",
    "dumps_report",
    "format_summary",
    "skipped_summary",
    "summarize_reports",
]

REPORT_VERSION = 1


def build_report(
    plan: BookPlan,
    merged: MergeResult,
    batches: list[BatchResult],
    cached_sizes: dict[str, int],
    *,
    wall_s: float,
    source: str,
    started: float | None = None,
) -> dict[str, Any]:
    """Assemble the report of one finished book.

    Keys: ``input``, ``output``, ``title``, ``authors``, ``language``,
    ``engine``, ``voice``, ``sample_rate``, ``started`` and ``finished``
    (UTC, ISO 8601), ``chapters`` (index, title,
    start_s, end_s, chars, chunks), ``totals`` (chars, chunks,
    chunks_from_cache, chunks_synthesized, synthesize_tasks, audio_s, wall_s,
    synth_s, merge_s, audio_reused, merge_passes: 1 when the file was
    written in one ffmpeg pass, rtf), ``chunks_per_worker`` (worker address
    -> chunks synthesised there),
    ``engine_loads`` (worker address -> times that worker process loaded the
    book's engine and model: 1 each when models stay resident),
    ``errors`` (non-fatal problems, e.g. a language fallback or gaps),
    ``gaps`` (silences that stand in for chunks that could not be
    synthesised, with ``--allow-gaps``: chunk, chapter, chapter_title,
    start_s, duration_s, error) and ``failures`` (the dead-letter file
    listing those chunks, or null).  ``totals.chunks_failed`` counts them.
    ``format`` is the audio format, ``outputs`` every file written (one,
    or one per chapter / part when split: url, start_s and end_s in the
    book, duration_s, chapters relative to the file, subtitles) and
    ``subtitles`` the subtitle files; ``readalong`` the read-along EPUB
    (``--readalong``: url, sentences, overlaid, unmatched, documents) or
    null.  ``skipped`` lists the front and
    back matter the conversion left out (title, kind, reason, chars; empty
    with ``--include-matter``), so nothing disappears unseen.
    """
    per_worker: Counter[str] = Counter()
    loads: dict[str, int] = {}
    for b in batches:
        per_worker[b.worker] += len(b.samples)
        loads[b.worker] = max(loads.get(b.worker, 0), b.engine_loads)
    synth_s = sum(b.synth_s for b in batches)
    unique = {c.key for c in plan.chunks}
    from_cache = sum(1 for k in unique if k in cached_sizes)
    return {
        "version": REPORT_VERSION,
        "input": source,
        "output": merged.output,
        "title": plan.title,
        "authors": list(plan.authors),
        "language": plan.language,
        "engine": plan.spec.engine,
        "voice": plan.spec.voice,
        "engine_settings": plan.spec.settings_dict,
        "model": plan.spec.model or None,
        "sample_rate": plan.sample_rate,
        "started": _iso(started if started is not None else time.time() - wall_s),
        "finished": _iso(time.time()),
        "chapters": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(ch).items()}
            for ch in merged.chapters
        ],
        "totals": {
            "chars": plan.chars,
            "chunks": len(plan.chunks),
            "unique_chunks": len(unique),
            "chunks_from_cache": from_cache,
            "chunks_synthesized": sum(len(b.samples) for b in batches),
            "chunks_failed": merged.chunks_failed,
            "synthesize_tasks": len(batches),
            "audio_s": round(merged.audio_s, 3),
            "wall_s": round(wall_s, 3),
            "synth_s": round(synth_s, 3),
            "merge_s": round(merged.merge_s, 3),
            "audio_reused": merged.audio_reused,
            "merge_passes": merged.passes,
            "rtf": round(synth_s / merged.audio_s, 4) if merged.audio_s else None,
        },
        "chunks_per_worker": dict(sorted(per_worker.items())),
        "engine_loads": dict(sorted(loads.items())),
        "errors": list(plan.warnings) + list(merged.warnings),
        "gaps": list(merged.gaps),
        "failures": merged.failures_url,
        "format": merged.format,
        "outputs": list(merged.outputs),
        "subtitles": list(merged.subtitles),
        "readalong": merged.readalong,
        "skipped": [asdict(s) for s in plan.skipped],
    }


#: Most characters of titles :func:`skipped_summary` lists, and of one title.
_SKIPPED_TITLES_CHARS = 120
_SKIPPED_TITLE_CHARS = 40


def skipped_summary(skipped: list[dict[str, Any]]) -> str:
    """One line saying what a conversion skipped, from a report's ``skipped``.

    ``"skipped 2 sections, 12,345 characters: Title Page, Contents — use
    --include-matter"``: titles made terminal-safe, each cut at 40
    characters, and listed up to about 120 characters (``"and 5 more"``).
    Empty when nothing was skipped.
    """
    if not skipped:
        return ""
    chars = sum(int(s.get("chars") or 0) for s in skipped)
    titles: list[str] = []
    used = 0
    for s in skipped:
        title = one_line(s.get("title") or "untitled", _SKIPPED_TITLE_CHARS)
        if titles and used + len(title) > _SKIPPED_TITLES_CHARS:
            break
        titles.append(title)
        used += len(title) + 2
    listed = ", ".join(titles)
    if len(titles) < len(skipped):
        listed += f" and {len(skipped) - len(titles)} more"
    noun = "section" if len(skipped) == 1 else "sections"
    return f"skipped {len(skipped)} {noun}, {chars:,} characters: {listed} — use --include-matter"


def dumps_report(report: dict[str, Any]) -> str:
    """The report as indented JSON text."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def _when(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def summarize_reports(outdir: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summarise a batch from the reports in *outdir* (path or fsspec URL).

    Reads every ``*.report.json`` there and two folder levels down (the
    ``<Author>/<Title>/`` folders of ``--layout audiobookshelf``), and notes the books that have a
    dead-letter file (``*.failures.jsonl``) but no report: books that failed
    because chunks could not be synthesised.  Nothing is recomputed: the
    reports are the single source of the figures.

    Returns
    -------
    dict
        ``books``: one row per book (``book``, ``title``, ``status``
        ``done``/``gaps``/``failed``, ``chapters``, ``audio_s``, ``wall_s``,
        ``rtf``, ``chunks``, ``chunks_from_cache``, ``chunks_failed``,
        ``output``, ``report``); ``totals``: the same figures summed, with
        the batch's wall time from the first start to the last finish when
        the reports carry them (else the sum of the books' wall times) and
        the real-time factor of all synthesis; ``problems``: one line per
        report that could not be read.
    """
    from ..storage import get_fs
    from ..storage.retry import with_retries

    fs, root = get_fs(outdir, storage_options)
    if not with_retries(lambda: fs.isdir(root), url=outdir, action="list the output folder"):
        from ..errors import UsageError

        raise UsageError(f"{outdir}: no such folder")
    found = with_retries(
        lambda: fs.find(root, maxdepth=3), url=outdir, action="list the output folder"
    )
    base = root.rstrip("/") + "/"
    names = sorted(
        str(n)[len(base) :] if str(n).startswith(base) else str(n).rsplit("/", 1)[-1]
        for n in found
        if str(n).endswith((".report.json", ".failures.jsonl"))
    )
    reports = [n for n in names if n.endswith(".report.json")]
    stems = {n[: -len(".report.json")] for n in reports}
    orphans = [
        n
        for n in names
        if n.endswith(".failures.jsonl") and n[: -len(".failures.jsonl")] not in stems
    ]
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    synth = 0.0
    for name in reports:
        url = f"{outdir.rstrip('/')}/{name}"
        try:
            raw = with_retries(
                lambda name=name: fs.cat_file(f"{root.rstrip('/')}/{name}"),
                url=url,
                action="read the report",
            )
            rep = json.loads(raw)
            t = rep["totals"]
            row = {
                "book": name[: -len(".report.json")],
                "title": rep.get("title"),
                "status": "gaps" if t.get("chunks_failed") else "done",
                "chapters": len(rep.get("chapters", ())),
                "audio_s": float(t["audio_s"]),
                "wall_s": float(t["wall_s"]),
                "rtf": t.get("rtf"),
                "chunks": int(t.get("unique_chunks", t.get("chunks", 0))),
                "chunks_from_cache": int(t.get("chunks_from_cache", 0)),
                "chunks_failed": int(t.get("chunks_failed", 0)),
                "output": rep.get("output"),
                "report": url,
            }
        except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
            problems.append(f"{url}: not a readable report ({type(exc).__name__}: {one_line(exc)})")
            continue
        synth += float(t.get("synth_s") or 0.0)
        start, end = _when(rep.get("started")), _when(rep.get("finished"))
        if start is not None and end is not None:
            starts.append(start)
            ends.append(end)
        rows.append(row)
    for name in orphans:
        url = f"{outdir.rstrip('/')}/{name}"
        try:
            lines = with_retries(
                lambda name=name: fs.cat_file(f"{root.rstrip('/')}/{name}"), url=url, action="read"
            )
            failed = sum(1 for line in lines.splitlines() if line.strip())
        except Exception:  # noqa: BLE001
            failed = 0
        rows.append(
            {
                "book": name[: -len(".failures.jsonl")],
                "title": None,
                "status": "failed",
                "chapters": None,
                "audio_s": None,
                "wall_s": None,
                "rtf": None,
                "chunks": None,
                "chunks_from_cache": None,
                "chunks_failed": failed,
                "output": None,
                "report": None,
                "failures": url,
            }
        )
    rows.sort(key=lambda r: r["book"])
    done = [r for r in rows if r["status"] != "failed"]
    audio = sum(r["audio_s"] for r in done)
    complete = len(starts) == len(done) and done
    totals = {
        "books": len(rows),
        "failed": len(rows) - len(done),
        "chapters": sum(r["chapters"] for r in done),
        "audio_s": round(audio, 3),
        "wall_s": round(max(ends) - min(starts) if complete else sum(r["wall_s"] for r in done), 3),
        "rtf": round(synth / audio, 4) if audio and synth else None,
        "chunks": sum(r["chunks"] for r in done),
        "chunks_from_cache": sum(r["chunks_from_cache"] for r in done),
        "chunks_failed": sum(r["chunks_failed"] or 0 for r in rows),
    }
    return {"outdir": outdir, "books": rows, "totals": totals, "problems": problems}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_summary(summary: dict[str, Any]) -> str:
    """The table of :func:`summarize_reports`.

    Columns: book, chapters, audio, wall, RTF, cache hits, failures.
    """
    head = ("book", "status", "chapters", "audio", "wall", "RTF", "cache hits", "failures")
    right = {2, 3, 4, 5, 6, 7}

    def cells(r: dict[str, Any], name: str) -> tuple[str, ...]:
        hits = "-" if r["chunks"] is None else f"{r['chunks_from_cache']}/{r['chunks']}"
        rtf = "-" if r["rtf"] is None else f"{r['rtf']:.3f}"
        chapters = "-" if r["chapters"] is None else str(r["chapters"])
        return (
            name,
            r.get("status", ""),
            chapters,
            _clock(r["audio_s"]),
            _clock(r["wall_s"]),
            rtf,
            hits,
            str(r["chunks_failed"] or 0),
        )

    rows = [head] + [cells(r, r["book"]) for r in summary["books"]]
    t = summary["totals"]
    rows.append(cells({**t, "status": f"{t['books'] - t['failed']}/{t['books']} done"}, "TOTAL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)
