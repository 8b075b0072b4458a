"""The sentences a plan speaks, and their times in the audio files.

A read-along book pairs every spoken sentence with its place in the text and
its clip in the audio.  :func:`spoken_sentences` lists the sentences exactly
as the subtitles cut them (:func:`~ebook2audio_dask.audio.subtitles.sentence_cues`):
the merge times them, and :mod:`.overlays` finds them in the book's text.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..text.chunk import BookPlan, sentence_ends

__all__ = ["AudioFile", "SpokenSentence", "TimedSentence", "spoken_sentences"]


@dataclass(frozen=True)
class SpokenSentence:
    """One sentence the plan speaks, in book order.

    Parameters
    ----------
    chunk : int
        Index into ``plan.chunks`` of the chunk that speaks it.
    chapter : int
        The plan chapter's index (:attr:`~ebook2audio_dask.text.chunk.Chunk.chapter`).
    text : str
        Its written text, white space collapsed.
    """

    chunk: int
    chapter: int
    text: str


@dataclass(frozen=True)
class TimedSentence:
    """A spoken sentence and its clip in one audio file.

    Parameters
    ----------
    sentence : SpokenSentence
        The sentence.
    audio : int
        Index into the list of audio files (:class:`AudioFile`).
    begin : float
        Seconds from that file's start where the sentence starts (``clipBegin``).
    end : float
        Where it ends (``clipEnd``); the clips of one file are contiguous
        (one's end is the next one's begin).
    """

    sentence: SpokenSentence
    audio: int
    begin: float
    end: float


@dataclass(frozen=True)
class AudioFile:
    """An encoded audio file a read-along book embeds.

    Parameters
    ----------
    path : str
        Local path of the file (the merge's final file).
    media_type : str
        ``"audio/mp4"`` or ``"audio/mpeg"``.
    duration : float
        Its length in seconds.
    name : str
        The file name to use inside the EPUB, e.g. ``"book.m4a"``.
    """

    path: str
    media_type: str
    duration: float
    name: str


def spoken_sentences(plan: BookPlan) -> list[SpokenSentence]:
    """Every sentence the plan speaks, in book order, cut as the subtitles cut them.

    Each chunk's written text (``chunk.display or chunk.text``) with its white
    space collapsed is cut at :attr:`~ebook2audio_dask.text.chunk.Chunk.sentences`
    (or at :func:`~ebook2audio_dask.text.chunk.sentence_ends` in the plan's
    language when the plan has none); the pieces are stripped and empty ones
    dropped.

    Parameters
    ----------
    plan : BookPlan
        The book's plan.

    Returns
    -------
    list of SpokenSentence
    """
    out: list[SpokenSentence] = []
    for n, chunk in enumerate(plan.chunks):
        text = chunk.display or chunk.text
        flat = " ".join(text.split())
        ends = chunk.sentences
        if ends is None:
            ends = sentence_ends(text, plan.language)
        for a, b in itertools.pairwise((0, *ends)):
            piece = flat[a:b].strip()
            if piece:
                out.append(SpokenSentence(chunk=n, chapter=chunk.chapter, text=piece))
    return out
