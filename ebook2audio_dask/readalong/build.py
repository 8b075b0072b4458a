"""The merge's side of a read-along book: sentence times from the real timeline, then the EPUB.

With ``--readalong`` every sentence is planned as a chunk of its own
(:func:`~ebook2audio_dask.text.chunk.plan_book`, ``sentence_chunks``), so
where each sentence starts in the merged audio is where its chunk starts:
the merge's timeline (:func:`~ebook2audio_dask.pipeline.layout.timeline`),
exact to the sample, pauses included.  :func:`timed_sentences` turns that
timeline into the clips of every spoken sentence, and :func:`build_readalong`
writes the EPUB 3 around the very audio files the merge encoded: the book's
own documents for an EPUB input, a generated EPUB 3
(:func:`~ebook2audio_dask.readalong.generate.generate_epub`) for the others.
"""

from __future__ import annotations

import posixpath
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..errors import BookError
from ..ingest import read_book
from ..storage.fs import get_fs
from ..text.chunk import BookPlan
from .generate import generate_epub
from .overlays import ChapterText, ReadAlongStats, write_readalong
from .sentences import AudioFile, TimedSentence, spoken_sentences

__all__ = [
    "AudioPart",
    "build_readalong",
    "readalong_audio_name",
    "readalong_url",
    "timed_sentences",
]

#: Media type of each audio format a read-along EPUB can hold.
MEDIA_TYPES = {"m4b": ("audio/mp4", ".m4a"), "mp3": ("audio/mpeg", ".mp3")}


@dataclass(frozen=True)
class AudioPart:
    """One audio file of the book as the merge wrote it.

    Parameters
    ----------
    path : str
        Its local path (the finished file, before it is staged).
    start, end : int
        The book's samples it holds.
    first, stop : int
        The chunks it holds: ``plan.chunks[first:stop]``.
    """

    path: str
    start: int
    end: int
    first: int
    stop: int


def timed_sentences(
    plan: BookPlan, times: Sequence[tuple[int, int]], parts: Sequence[AudioPart], rate: int
) -> list[TimedSentence]:
    """The clip of every spoken sentence, in book order.

    Parameters
    ----------
    plan : BookPlan
        The book's chunks.
    times : sequence of (int, int)
        The book's timeline: each chunk's first sample and its samples of audio.
    parts : sequence of AudioPart
        The audio files.
    rate : int
        Sample rate.

    Returns
    -------
    list of TimedSentence
        A sentence begins where its chunk's audio begins (a chunk holding
        several sentences shares its audio among them by their characters, as
        subtitles do) and ends where the next sentence of its file begins, or
        with the file: the clips of a file are contiguous, pauses included.
    """
    by_chunk: dict[int, list] = {}
    for sentence in spoken_sentences(plan):
        by_chunk.setdefault(sentence.chunk, []).append(sentence)
    out: list[TimedSentence] = []
    for n, part in enumerate(parts):
        starts: list[tuple[float, Any]] = []
        for i in range(part.first, part.stop):
            sentences = by_chunk.get(i)
            if not sentences:
                continue
            begin, length = times[i]
            total = sum(len(s.text) for s in sentences) or 1
            done = 0
            for s in sentences:
                starts.append(((begin - part.start + length * done / total) / rate, s))
                done += len(s.text)
        for k, (begin, s) in enumerate(starts):
            end = starts[k + 1][0] if k + 1 < len(starts) else (part.end - part.start) / rate
            out.append(TimedSentence(sentence=s, audio=n, begin=begin, end=end))
    return out


def readalong_audio_name(n: int, count: int, fmt: str) -> str:
    """The name of audio file *n* (1-based) of *count* inside the EPUB: ``book.m4a``,
    ``part-01.mp3``... (plain ASCII: readers and epubcheck dislike spaces)."""
    ext = MEDIA_TYPES[fmt][1]
    if count == 1:
        return f"book{ext}"
    return f"part-{n:0{max(2, len(str(count)))}d}{ext}"


def build_readalong(
    plan: BookPlan,
    times: Sequence[tuple[int, int]],
    parts: Sequence[AudioPart],
    fmt: str,
    target: str,
    workdir: str | Path,
    *,
    include_matter: bool = False,
    storage_options: dict[str, Any] | None = None,
    ingest: dict[str, Any] | None = None,
) -> ReadAlongStats:
    """Write the read-along EPUB of a merged book at the local path *target*.

    Parameters
    ----------
    plan : BookPlan
        The book's plan (planned with one sentence per chunk).
    times : sequence of (int, int)
        The book's timeline.
    parts : sequence of AudioPart
        The finished audio files, in order.
    fmt : {"m4b", "mp3"}
        Their format.
    target : str
        Where the EPUB is written (written whole, then renamed there).
    workdir : str or Path
        Scratch folder (the source EPUB is copied there).
    include_matter : bool
        The conversion spoke front and back matter (plan chapter *n* is then
        the *n*-th section, not the *n*-th body chapter).
    storage_options : dict, optional
        To read the book's source again (its text, with the matter).
    ingest : dict, optional
        The client's ``ebook2audio.ingest`` settings (the parse task's limits).

    Returns
    -------
    ReadAlongStats
        Sentences given, overlaid and not found in the text.

    Raises
    ------
    BookError
        The source cannot be read again, or the EPUB cannot be written.
    """
    media_type, _ = MEDIA_TYPES[fmt]
    rate = plan.sample_rate
    workdir = Path(workdir)
    with config.applied(ingest):
        book = read_book(plan.source, include_matter=True, storage_options=storage_options)
    spoken = list(book.chapters) if include_matter else [
        c for c in book.chapters if c.kind == "body"
    ]  # fmt: skip
    if book.format == "epub":
        epub = str(workdir / "source.epub")
        fs, path = get_fs(plan.source, storage_options)
        with fs.open(path, "rb") as src, open(epub, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        sources = [c.source for c in book.chapters]
    else:
        epub = str(workdir / "generated.epub")
        sources = generate_epub(book, epub, cover=book.cover)
    where = {id(c): src for c, src in zip(book.chapters, sources, strict=True)}
    chapters = []
    for ch in plan.chapters:
        if not 1 <= ch.index <= len(spoken):
            raise BookError(plan.source, f"read-along: chapter {ch.index} not found on reading")
        chapters.append(ChapterText(chapter=ch.index, source=where[id(spoken[ch.index - 1])]))
    audio = [
        AudioFile(
            path=p.path,
            media_type=media_type,
            duration=(p.end - p.start) / rate,
            name=readalong_audio_name(n, len(parts), fmt),
        )
        for n, p in enumerate(parts, 1)
    ]
    sentences = timed_sentences(plan, times, parts, rate)
    return write_readalong(
        epub, chapters, sentences, audio, target, language=plan.language or book.language
    )


def readalong_url(output_url: str) -> str:
    """Where a book's read-along EPUB is published: ``<stem>.readalong.epub`` beside its audio."""
    base, _ = posixpath.splitext(output_url)
    return base + ".readalong.epub"
