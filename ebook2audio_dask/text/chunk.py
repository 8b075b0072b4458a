"""The *chunk* stage: a Book becomes an ordered plan of content-keyed chunks.

A chunk is a few sentences of one paragraph, no longer than the engine's
limit.  Its **content key** hashes exactly what determines its audio (text,
engine, voice, engine settings, sample rate), so the same text spoken by the
same voice is synthesised once and found in the chunk store ever after.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from ..audio import clean_tag
from ..engines.base import EngineSpec
from ..model import Book, Pronunciation, Skipped
from .normalize import normalize_text
from .segment import split_long, split_sentences
from .spoken import FEATURES, Speaker

__all__ = [
    "BookPlan",
    "ChapterPlan",
    "Chunk",
    "Pauses",
    "content_key",
    "heading_paragraphs",
    "plan_book",
    "sentence_ends",
    "split_cue_text",
]

#: Bump when the audio for a given key would change (e.g. a new WAV layout).
KEY_VERSION = 1


def content_key(text: str, spec: EngineSpec, sample_rate: int) -> str:
    """Stable content key of one chunk: SHA-256 (hex, 40 chars) of its inputs.

    Parameters
    ----------
    text : str
        The exact text given to the engine.
    spec : EngineSpec
        Engine, voice and audio-affecting settings.
    sample_rate : int
        Output sample rate in Hz.
    """
    payload = json.dumps(
        {"v": KEY_VERSION, "text": text, "spec": spec.token(), "sr": int(sample_rate)},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Pauses:
    """Silence in seconds after a sentence group, paragraph, title and chapter.

    A kind left ``None`` is read from ``ebook2audio.pauses.<kind>`` when the
    ``Pauses`` is made (the packaged YAML is the one default), so every field
    of a ``Pauses`` holds a number.

    Parameters
    ----------
    sentence, paragraph, title, chapter : float, optional
        Seconds of silence after each; ``None``: the configured value.
    """

    sentence: float | None = None
    paragraph: float | None = None
    title: float | None = None
    chapter: float | None = None

    def __post_init__(self) -> None:
        unset = [
            k for k in ("sentence", "paragraph", "title", "chapter") if getattr(self, k) is None
        ]
        if unset:
            from .. import config

            conf = config.get("pauses")
            for kind in unset:
                object.__setattr__(self, kind, float(conf[kind]))

    @classmethod
    def from_config(cls) -> Pauses:
        """Every kind from ``ebook2audio.pauses`` (the same as ``Pauses()``)."""
        return cls()


@dataclass(frozen=True, slots=True)  # slots: a plan holds one per ~200 characters of a book
class Chunk:
    """One unit of synthesis.

    Parameters
    ----------
    key : str
        Content key (see :func:`content_key`); the chunk store's file name.
    text : str
        What the engine speaks.
    chapter : int
        Index of the chapter the chunk belongs to.
    pause_after : float
        Seconds of silence after the chunk's audio.
    display : str
        The written (original) text when it differs from :attr:`text` (the
        spoken form after normalisation and lexicons, possibly with phoneme
        markup); empty when they are the same.  Subtitles show
        ``chunk.display or chunk.text``.
    sentences : tuple of int or None
        Where each sentence of the text subtitles show ends
        (:func:`sentence_ends`), when the plan was asked for them
        (``plan_book(..., sentences=True)``); ``None`` otherwise.  Not part
        of the key.
    """

    key: str
    text: str
    chapter: int
    pause_after: float
    display: str = ""
    sentences: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ChapterPlan:
    """A chapter's place in the plan: chunks ``plan.chunks[start:stop]``."""

    index: int
    title: str
    start: int
    stop: int
    chars: int


@dataclass(frozen=True)
class BookPlan:
    """Everything the synthesize and merge stages need to know about a book.

    No audio and no cover here: the plan is small and is gathered to the
    client, which decides what to synthesise.
    """

    source: str
    title: str
    authors: tuple[str, ...]
    language: str
    spec: EngineSpec
    sample_rate: int
    chunks: tuple[Chunk, ...]
    chapters: tuple[ChapterPlan, ...]
    warnings: tuple[str, ...] = field(default=())
    #: Front/back matter the conversion leaves out (:attr:`Book.skipped`), for the report.
    skipped: tuple[Skipped, ...] = field(default=())

    @property
    def chars(self) -> int:
        return sum(len(c.text) for c in self.chunks)

    def batches(
        self,
        batch_chars: int,
        skip: frozenset[str] | set[str] = frozenset(),
        *,
        slots: int = 1,
        min_chars: int = 400,
        backlog: int = 0,
    ) -> list[tuple[Chunk, ...]]:
        """Group the chunks still to synthesise into batches (one task each).

        Chunks whose key is in *skip* (already in the store) and repeated keys
        (the same text twice in a book) are left out.  Order is kept, so
        batches cover consecutive text and books finish front to back.

        Batch sizes follow *guided self-scheduling*: each new batch takes about
        ``remaining / (2 * slots)`` characters, capped at *batch_chars* and at
        least *min_chars* — large batches first (little per-task overhead),
        small ones at the end, so that the *slots* workers running synthesis
        finish at nearly the same time.

        Parameters
        ----------
        batch_chars : int
            Largest batch, in characters.
        skip : set of str
            Keys already in the chunk store.
        slots : int
            Synthesize tasks the cluster runs at once.
        min_chars : int
            Smallest batch worth a task (a few seconds of work).
        backlog : int
            Characters of other books queued behind this one in the same run:
            they count as remaining work, so a book that is not the last one
            keeps large batches (fewer tasks) and only the run's tail shrinks.
        """
        seen = set(skip)
        todo: list[Chunk] = []
        for chunk in self.chunks:
            if chunk.key not in seen:
                seen.add(chunk.key)
                todo.append(chunk)
        remaining = sum(len(c.text) for c in todo)
        floor = min(min_chars, batch_chars)
        batches: list[tuple[Chunk, ...]] = []
        current: list[Chunk] = []
        size = 0
        target = 0
        for chunk in todo:
            if not current:
                target = max(
                    floor, min(batch_chars, -(-(remaining + backlog) // (2 * max(1, slots))))
                )
            elif size + len(chunk.text) > target:
                batches.append(tuple(current))
                current, size = [], 0
                target = max(
                    floor, min(batch_chars, -(-(remaining + backlog) // (2 * max(1, slots))))
                )
            current.append(chunk)
            size += len(chunk.text)
            remaining -= len(chunk.text)
        if current:
            batches.append(tuple(current))
        return batches


def split_cue_text(text: str, language: str | None = None) -> list[str]:
    """The sentences of a chunk's written text as its subtitle cues show them.

    White space is collapsed, then the text is split by the chunk stage's own
    splitter (:func:`~ebook2audio_dask.text.segment.split_sentences`, which
    knows abbreviations such as "Dr."; English rules without a *language*).
    """
    return [" ".join(s.split()) for s in split_sentences(" ".join(str(text).split()), language)]


def sentence_ends(text: str, language: str | None = None) -> tuple[int, ...]:
    """Where each sentence of *text* (:func:`split_cue_text`) ends.

    Parameters
    ----------
    text : str
        A chunk's written text.
    language : str or None
        BCP 47 tag of the splitting rules.

    Returns
    -------
    tuple of int
        End offsets into ``" ".join(text.split())``, one per sentence, in
        order: slicing there (and stripping) gives the sentences back (see
        :func:`~ebook2audio_dask.audio.subtitles.sentence_cues`).
    """
    flat = " ".join(str(text).split())
    ends: list[int] = []
    pos = 0
    for sentence in split_cue_text(flat, language):
        found = flat.find(sentence, pos)
        pos = (found if found >= 0 else pos) + len(sentence)
        ends.append(min(pos, len(flat)))
    return tuple(ends)


def _spoken_groups(
    sentences: list[str], max_chars: int, speak: Callable[[str], str], join: bool = True
) -> list[tuple[str, str]]:
    """Join consecutive sentences into ``(spoken, written)`` groups.

    Each sentence is turned into its spoken form first; the groups obey
    *max_chars* on the spoken text (what the engine gets).  A sentence whose
    spoken form is too long is cut finer in its written form.  With *join*
    false every sentence (or piece of a long one) is a group of its own.
    """
    pieces: list[tuple[str, str]] = []  # (written, spoken)
    for sentence in sentences:
        for written in split_long(sentence, max_chars):
            spoken = speak(written)
            if len(spoken) <= max_chars:
                pieces.append((written, spoken))
                continue
            limit, parts, spoken_parts = max_chars, [written], [spoken]
            while limit > 20 and any(len(s) > max_chars for s in spoken_parts):
                limit = int(limit * 0.7)
                parts = split_long(written, limit)
                spoken_parts = [speak(p) for p in parts]
            for part, spoken in zip(parts, spoken_parts):
                hard = split_long(spoken, max_chars) if len(spoken) > max_chars else [spoken]
                pieces.extend((part if i == 0 else "", h) for i, h in enumerate(hard))
    groups: list[tuple[str, str]] = []
    cur_w = cur_s = ""
    for written, spoken in pieces:
        if join and cur_s and len(cur_s) + 1 + len(spoken) <= max_chars:
            cur_s = f"{cur_s} {spoken}"
            cur_w = f"{cur_w} {written}".strip()
        else:
            if cur_s:
                groups.append((cur_s, cur_w))
            cur_w, cur_s = written, spoken
    if cur_s:
        groups.append((cur_s, cur_w))
    return groups


def _norm_words(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def heading_paragraphs(paragraphs: Sequence[str], title: str) -> int:
    """How many leading paragraphs are the chapter's heading (its title's words).

    Ingest keeps a chapter's own heading lines as paragraphs ("STAVE ONE.",
    "MARLEY'S GHOST."); when they spell the title, the title is not spoken a
    second time and they get the title pause.  A generated EPUB
    (:mod:`ebook2audio_dask.readalong.generate`) likewise writes no ``<h1>``
    then.

    Parameters
    ----------
    paragraphs : sequence of str
        The chapter's paragraphs (normalised as the plan speaks them).
    title : str
        The chapter's title.

    Returns
    -------
    int
        The number of leading paragraphs (at most 4) whose letters and digits,
        joined, spell the title or its beginning (``"I."`` of ``"I. Deux
        Parents"``); 0 when the first does not.
    """
    target = _norm_words(title)
    if not target:
        return 0
    seen = ""
    for n, para in enumerate(paragraphs[:4]):
        words = _norm_words(para)
        if not words or not target.startswith(seen + words):
            return n
        seen += words
        if seen == target:
            return n + 1
    return 0


def plan_book(
    book: Book,
    spec: EngineSpec,
    *,
    sample_rate: int,
    max_chars: int,
    language: str,
    pauses: Pauses | None = None,
    speak_titles: bool = True,
    warnings: tuple[str, ...] = (),
    normalize: Iterable[str] = FEATURES,
    lexicon: Iterable[Pronunciation] = (),
    phoneme_alphabet: str | None = None,
    sentences: bool = False,
    sentence_chunks: bool = False,
) -> BookPlan:
    """Cut a book into chunks and key them.

    Parameters
    ----------
    book : Book
        The parsed book (already restricted to the chapters to convert).
    spec : EngineSpec
        The engine and voice that will speak it.
    sample_rate : int
        The voice's sample rate (part of every key).
    max_chars : int
        Longest chunk allowed (the engine's limit).
    language : str
        Language used for sentence splitting.
    pauses : Pauses, optional
        Pause model; defaults to the configured one.
    speak_titles : bool
        Speak each chapter's title first, unless its first paragraph already
        is the title.
    warnings : tuple of str
        Notes to carry into the report (e.g. a language fallback).
    normalize : iterable of str
        Spoken-form features to apply (see
        :data:`ebook2audio_dask.text.spoken.FEATURES`); empty: none.
    lexicon : iterable of Pronunciation
        User lexicon entries; the book's own (:attr:`Book.pronunciations`)
        are added after them (user entries win).
    phoneme_alphabet : str or None
        The engine's :attr:`~ebook2audio_dask.engines.base.Engine.phoneme_alphabet`:
        how phoneme entries are written into the chunk text.
    sentences : bool
        Give each chunk its sentence ends (:attr:`Chunk.sentences`), for
        subtitles: the merge then need not split its text again.
    sentence_chunks : bool
        One sentence per chunk (a sentence longer than *max_chars* still
        takes several): every sentence then starts at a chunk's start, whose
        place in the merged audio is exact, for read-along books
        (``--readalong``).  Sentences of one paragraph are otherwise joined
        up to *max_chars*.

    Each chunk's :attr:`Chunk.text` is the spoken form of its sentences
    (numbers, abbreviations and Roman numerals in words, lexicon entries as
    phoneme markup or respellings); :attr:`Chunk.display` keeps the written
    sentences when they differ.

    Returns
    -------
    BookPlan
    """
    pauses = pauses or Pauses.from_config()
    speaker = Speaker(
        language,
        features=tuple(normalize),
        entries=tuple(lexicon) + tuple(book.pronunciations),
        phoneme_alphabet=phoneme_alphabet,
        engine=spec.engine,
    )

    def head(text: str) -> str:
        return speaker.speak(text, heading=True)

    chunks: list[Chunk] = []
    chapters: list[ChapterPlan] = []
    for chapter in book.chapters:
        start = len(chunks)
        paragraphs = [normalize_text(p) for p in chapter.paragraphs]
        paragraphs = [p for p in paragraphs if p]
        title = normalize_text(chapter.title)
        if not paragraphs:
            continue  # a chapter with nothing to say (a bare heading) is dropped
        units: list[
            tuple[list[tuple[str, str]], float]
        ] = []  # ((spoken, written)s, pause after the last)
        heading = heading_paragraphs(paragraphs, title)
        join = not sentence_chunks
        if speak_titles and title and not heading:
            units.append((_spoken_groups([title], max_chars, head, join), pauses.title))
        for n, para in enumerate(paragraphs):
            para_sentences = split_sentences(para, language)
            if n < heading:
                units.append((_spoken_groups(para_sentences, max_chars, head, join), pauses.title))
            else:
                units.append(
                    (
                        _spoken_groups(para_sentences, max_chars, speaker.speak, join),
                        pauses.paragraph,
                    )
                )
        for groups, pause in units:
            for i, (text, written) in enumerate(groups):
                last = i == len(groups) - 1
                chunks.append(
                    Chunk(
                        key=content_key(text, spec, sample_rate),
                        text=text,
                        chapter=chapter.index,
                        pause_after=pause if last else pauses.sentence,
                        display=written if written != text else "",
                        sentences=sentence_ends(written or text, language) if sentences else None,
                    )
                )
        chunks[-1] = replace(chunks[-1], pause_after=max(chunks[-1].pause_after, pauses.chapter))
        chapters.append(
            ChapterPlan(
                index=chapter.index,
                title=clean_tag(chapter.title),  # what the files hold (and the report shows)
                start=start,
                stop=len(chunks),
                chars=sum(len(c.text) for c in chunks[start:]),
            )
        )
    return BookPlan(
        source=book.source,
        title=clean_tag(book.title),
        authors=tuple(a for a in map(clean_tag, book.authors) if a),
        language=language,
        spec=spec,
        sample_rate=sample_rate,
        chunks=tuple(chunks),
        chapters=tuple(chapters),
        warnings=tuple(warnings) + tuple(speaker.warnings()),
        skipped=book.skipped,
    )
