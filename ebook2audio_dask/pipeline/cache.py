"""Looking after the chunk store: what is in it, and pruning it."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ..storage import ChunkStore
from .options import ConvertOptions
from .tasks import parse_task, plan_task

__all__ = ["cache_info", "keys_for_books", "prune_cache"]


def cache_info(store: ChunkStore) -> dict[str, Any]:
    """Size and counts of the store, per engine (one listing).

    Returns
    -------
    dict
        ``{"url", "chunks", "voices", "encoded_books", "bytes", "oldest", "newest",
        "engines": {engine: {"chunks", "bytes", "voices"}}}`` (times as POSIX
        seconds; ``encoded_books``: books whose encoded audio is kept).
    """
    engines: dict[str, dict[str, int]] = defaultdict(lambda: {"chunks": 0, "bytes": 0, "voices": 0})
    encoded = {"books": 0, "bytes": 0}
    times = []
    for e in store.entries():
        if e.kind == "audio":
            encoded["books"] += 1
            encoded["bytes"] += e.size
        else:
            slot = engines[e.engine]
            slot["bytes"] += e.size
            slot["voices" if e.kind == "voice" else "chunks"] += 1
        if e.modified:
            times.append(e.modified)
    return {
        "url": store.url,
        "chunks": sum(v["chunks"] for v in engines.values()),
        "voices": sum(v["voices"] for v in engines.values()),
        "encoded_books": encoded["books"],
        "bytes": sum(v["bytes"] for v in engines.values()) + encoded["bytes"],
        "oldest": min(times) if times else None,
        "newest": max(times) if times else None,
        "engines": {k: dict(v) for k, v in sorted(engines.items())},
    }


def keys_for_books(books: Iterable[str], options: ConvertOptions) -> set[str]:
    """Content keys of every chunk the given books would use with *options*.

    The books are planned here; nothing is spoken.
    """
    request = options.plan_request()
    keys: set[str] = set()
    for source in books:
        book = parse_task(source, bool(options.include_matter), options.storage_options)
        keys.update(c.key for c in plan_task(book, request).chunks)
    return keys


def prune_cache(
    store: ChunkStore,
    *,
    keep: set[str] | None = None,
    older_than_days: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Delete chunks not in *keep* and/or last written more than *older_than_days* ago.

    With both, a chunk goes when it is unused **and** old.  Stored voices and
    kept encoded audio are pruned by age only.

    Returns
    -------
    dict
        ``{"deleted": n, "bytes": freed, "kept": n, "dry_run": bool}``.
    """
    if keep is None and older_than_days is None:
        raise ValueError("prune needs keep= and/or older_than_days=")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    doomed, kept = [], 0
    for e in store.entries():
        old = cutoff is None or (e.modified and e.modified < cutoff)
        unused = e.kind == "chunk" and (keep is None or e.key not in keep)
        if e.kind in ("voice", "audio"):
            unused = keep is None or cutoff is not None
        if old and unused:
            doomed.append(e)
        else:
            kept += 1
    if not dry_run:
        store.delete([e.path for e in doomed])
    return {
        "deleted": len(doomed),
        "bytes": sum(e.size for e in doomed),
        "kept": kept,
        "dry_run": dry_run,
    }
