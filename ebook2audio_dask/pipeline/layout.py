"""Where everything lands in the merged book: pure functions of the plan and the chunks' lengths.

No Dask and no I/O here (the merge, :mod:`~ebook2audio_dask.pipeline.merge`,
does those), so the layout of a book can be computed, and tested, from a
plan and a few numbers:

* the **timeline**: each chunk's first sample and length (:func:`timeline`);
* the **parts**: where a split book starts a new file (:class:`PartCuts`,
  :func:`cut_before`, :class:`Part`);
* what each file holds: its chapter marks (:func:`part_marks`) and subtitle
  cues (:func:`part_cues`, from the sentence ends the plan carries);
* the files' **names** (:func:`output_names`, :func:`with_suffix`).

Positions are in samples at the plan's sample rate; a chunk's pause follows
its audio.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from ..audio import ChapterMark, Cue, OutputSpec, sentence_cues
from ..storage.names import chapter_name, part_name
from ..text.chunk import BookPlan, ChapterPlan, sentence_ends

__all__ = [
    "SPLIT_PREFER_CHAPTER",
    "Part",
    "PartCuts",
    "chunk_cues",
    "cut_before",
    "output_names",
    "part_cues",
    "part_marks",
    "timeline",
    "with_suffix",
]

#: With --split-hours, a part is ended at a chapter's start, rather than in the
#: chapter, when it is at least this share of the limit long and the chapter
#: (estimated from its characters) would not fit.
SPLIT_PREFER_CHAPTER = 0.8


@dataclass
class Part:
    """One output file: samples ``start..end`` of the book, chunks ``first..stop``.

    Parameters
    ----------
    start : int
        The book's sample where the file starts.
    first : int
        Index of its first chunk.
    path : str
        Where its (first-pass) audio is written; empty when not needed.
    end : int
        The book's sample where it ends (set when the file is closed).
    stop : int
        Index after its last chunk (set when the file is closed).
    """

    start: int
    first: int
    path: str
    end: int = 0
    stop: int = 0


def timeline(plan: BookPlan, lengths: dict[str, int], rate: int) -> list[tuple[int, int]]:
    """``(start sample, audio samples)`` of every chunk in the book.

    Parameters
    ----------
    plan : BookPlan
        The book's chunks, in order, with their pauses.
    lengths : dict
        Samples of audio of each chunk key.
    rate : int
        Sample rate (pauses are in seconds).
    """
    out = []
    position = 0
    for chunk in plan.chunks:
        n = lengths[chunk.key]
        out.append((position, n))
        position += n + int(round(chunk.pause_after * rate))
    return out


def cut_before(
    spec: OutputSpec,
    i: int,
    in_part: int,
    n: int,
    limit: int | None,
    chapter_at: dict[int, ChapterPlan],
    spoken: Sequence[int],
) -> bool:
    """Does a new output file start at chunk *i*?

    Parameters
    ----------
    spec : OutputSpec
        The split: ``"chapters"`` (a file per chapter), ``"hours"`` or none.
    i : int
        The chunk's index.
    in_part : int
        Samples in the current file so far.
    n : int
        The chunk's samples, its pause included.
    limit : int or None
        Most samples in one file (``--split-hours``).
    chapter_at : dict
        The chapters by the index of their first chunk.
    spoken : sequence of int
        ``(characters, samples)`` spoken so far: the speaking rate that
        estimates whether the next chapter still fits.

    Returns
    -------
    bool
        By chapters: at every chapter's start.  By hours: when the chunk would
        pass the limit, or at a chapter's start when the file is at least
        :data:`SPLIT_PREFER_CHAPTER` of the limit long and the chapter would
        not fit.  A file holds at least one chunk.
    """
    if spec.split == "chapters":
        return i in chapter_at
    if limit is None or in_part == 0:
        return False
    if in_part + n > limit:
        return True
    chapter = chapter_at.get(i)
    if chapter is not None and in_part >= SPLIT_PREFER_CHAPTER * limit:
        per_char = spoken[1] / spoken[0] if spoken[0] else 0.0
        return in_part + chapter.chars * per_char > limit
    return False


class PartCuts:
    """The book's output files, cut chunk by chunk as its audio streams.

    Parameters
    ----------
    spec : OutputSpec
        The split (none: one file).
    rate : int
        Sample rate (``split_hours`` becomes a number of samples).
    chapter_at : dict
        The chapters by the index of their first chunk.
    spoken : sequence of int
        ``(characters, samples)`` known to be spoken (see :func:`cut_before`).

    Attributes
    ----------
    parts : list of Part
        The files so far; the last one is open until :meth:`close`.
    position : int
        Samples so far (the next chunk's first sample).
    """

    def __init__(
        self,
        spec: OutputSpec,
        rate: int,
        chapter_at: dict[int, ChapterPlan],
        spoken: Sequence[int],
    ):
        self.spec = spec
        self.limit = int(spec.split_hours * 3600 * rate) if spec.split == "hours" else None
        self.chapter_at = chapter_at
        self.spoken = spoken
        self.parts: list[Part] = []
        self.position = 0

    def add(self, i: int, n: int, pause: int) -> Part | None:
        """Chunk *i*: *n* samples of audio, then *pause* samples of silence.

        Returns the new :class:`Part` (its *path* empty) when the chunk
        starts a file (the one before it is then closed), else None.
        """
        parts = self.parts
        started = None
        if not parts or cut_before(
            self.spec,
            i,
            self.position - parts[-1].start,
            n + pause,
            self.limit,
            self.chapter_at,
            self.spoken,
        ):
            if parts:
                parts[-1].end = self.position
                parts[-1].stop = i
            started = Part(start=self.position, first=i, path="")
            parts.append(started)
        self.position += n + pause
        return started

    def close(self, n_chunks: int) -> list[Part]:
        """The last file ends with the book (*n_chunks* chunks); returns :attr:`parts`."""
        self.parts[-1].end = self.position
        self.parts[-1].stop = n_chunks
        return self.parts


def part_marks(
    plan: BookPlan, times: list[tuple[int, int]], part: Part, book_end: int
) -> list[ChapterMark]:
    """The chapters in one output file, relative to it.

    Parameters
    ----------
    plan : BookPlan
        The book's chunks and chapters.
    times : list of (int, int)
        The book's :func:`timeline`.
    part : Part
        The file.
    book_end : int
        The book's last sample (the end of its last chapter).

    Returns
    -------
    list of ChapterMark
        The part of each chapter inside the file; a chapter that started in
        an earlier file is titled "(continued)".
    """
    marks = []
    n = len(plan.chunks)
    for ch in plan.chapters:
        if ch.stop <= ch.start:
            continue
        start = times[ch.start][0]
        end = times[ch.stop][0] if ch.stop < n else book_end
        lo, hi = max(start, part.start), min(end, part.end)
        if hi <= lo:
            continue
        title = ch.title if start >= part.start else f"{ch.title} (continued)"
        marks.append(ChapterMark(title, lo - part.start, hi - part.start))
    return marks


def chunk_cues(
    text: str,
    start_s: float,
    end_s: float,
    language: str | None = None,
    *,
    ends: Sequence[int] | None = None,
) -> list[Cue]:
    """Cues for one chunk whose audio runs from *start_s* to *end_s*.

    One cue per sentence (:func:`~ebook2audio_dask.audio.subtitles.sentence_cues`),
    the chunk's duration shared among them in proportion to their characters.
    *ends* are the sentence ends the plan carries
    (:attr:`~ebook2audio_dask.text.chunk.Chunk.sentences`); without them the
    text is split here, in *language*
    (:func:`~ebook2audio_dask.text.chunk.sentence_ends`): the same sentences.
    """
    if ends is None:
        ends = sentence_ends(text, language)
    return sentence_cues(text, ends, start_s, end_s)


def part_cues(
    plan: BookPlan, times: list[tuple[int, int]], part: Part, gap_at: set[int], rate: int
) -> list[Cue]:
    """Subtitle cues of one output file: each chunk's written text over its audio
    (not its pause), in seconds from the file's start.

    Parameters
    ----------
    plan : BookPlan
        The book's chunks (their written text and sentence ends) and language.
    times : list of (int, int)
        The book's :func:`timeline`.
    part : Part
        The file.
    gap_at : set of int
        Indices of the chunks that are silence (no cue).
    rate : int
        Sample rate.
    """
    cues: list[Cue] = []
    language = getattr(plan, "language", None)
    for i in range(part.first, part.stop):
        if i in gap_at:
            continue
        chunk = plan.chunks[i]
        start, n = times[i]
        text = getattr(chunk, "display", "") or chunk.text
        cues += chunk_cues(
            text,
            (start - part.start) / rate,
            (start + n - part.start) / rate,
            language,
            ends=getattr(chunk, "sentences", None),
        )
    return cues


def with_suffix(url: str, suffix: str) -> str:
    """*url* with its extension replaced by *suffix* (``".srt"``...)."""
    base, _ = posixpath.splitext(url)
    return base + suffix


def output_names(
    output_url: str, spec: OutputSpec, plan: BookPlan, parts: Sequence[Part]
) -> list[str]:
    """URL of each output file, every name at most 255 bytes.

    Parameters
    ----------
    output_url : str
        The unsplit file's URL: its name is the book's (already fitted) stem
        and extension.
    spec : OutputSpec
        The split.
    plan : BookPlan
        The chapters (their titles name the files of a book split by chapters).
    parts : sequence of Part
        The files.

    Returns
    -------
    list of str
        *output_url* for an unsplit book; ``<stem>/<NN> - <title>.<ext>`` by
        chapters and ``<stem> - Part i of n.<ext>`` by hours, named with
        :mod:`ebook2audio_dask.storage.names`.  Subtitles swap the extension
        for ``.srt``/``.vtt``, never longer than an audio extension, so their
        names fit too.
    """
    if spec.split is None:
        return [output_url]
    folder, name = posixpath.split(output_url)
    stem, ext = posixpath.splitext(name)
    if spec.split == "hours":
        return [
            posixpath.join(folder, part_name(stem, n, len(parts), ext))
            for n in range(1, len(parts) + 1)
        ]
    width = max(2, len(str(len(parts))))
    chapter_at = {ch.start: ch for ch in plan.chapters if ch.stop > ch.start}
    return [
        posixpath.join(folder, stem, chapter_name(f"{n:0{width}d}", chapter_at[p.first].title, ext))
        for n, p in enumerate(parts, 1)
    ]
