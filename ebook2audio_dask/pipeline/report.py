"""The per-book JSON report: the single source of a conversion's figures."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import Any

from ..text.chunk import BookPlan
from .tasks import BatchResult, MergeResult

__all__ = ["build_report", "dumps_report", "REPORT_VERSION"]

REPORT_VERSION = 1


def build_report(
    plan: BookPlan,
    merged: MergeResult,
    batches: list[BatchResult],
    cached_sizes: dict[str, int],
    *,
    wall_s: float,
    source: str,
) -> dict[str, Any]:
    """Assemble the report of one finished book.

    Keys: ``input``, ``output``, ``title``, ``authors``, ``language``,
    ``engine``, ``voice``, ``sample_rate``, ``chapters`` (index, title,
    start_s, end_s, chars, chunks), ``totals`` (chars, chunks,
    chunks_from_cache, chunks_synthesized, synthesize_tasks, audio_s, wall_s,
    synth_s, merge_s, rtf), ``chunks_per_worker`` (worker address -> chunks synthesised there),
    ``engine_loads`` (worker address -> times that worker process loaded the
    book's engine and model: 1 each when models stay resident),
    ``errors`` (non-fatal problems, e.g. a language fallback or gaps),
    ``gaps`` (silences that stand in for chunks that could not be
    synthesised, with ``--allow-gaps``: chunk, chapter, chapter_title,
    start_s, duration_s, error) and ``failures`` (the dead-letter file
    listing those chunks, or null).  ``totals.chunks_failed`` counts them.
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
            "rtf": round(synth_s / merged.audio_s, 4) if merged.audio_s else None,
        },
        "chunks_per_worker": dict(sorted(per_worker.items())),
        "engine_loads": dict(sorted(loads.items())),
        "errors": list(plan.warnings) + list(merged.warnings),
        "gaps": list(merged.gaps),
        "failures": merged.failures_url,
    }


def dumps_report(report: dict[str, Any]) -> str:
    """The report as indented JSON text."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
