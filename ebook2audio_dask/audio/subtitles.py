"""Subtitles / read-along text: SRT and WebVTT cues from the real chunk timings.

The merge knows exactly where each chunk's audio starts and ends in the
output (it streams the chunks' PCM itself), so a cue per chunk is exact.  A
chunk holds one to a few sentences, whose ends the plan gives
(:attr:`~ebook2audio_dask.text.chunk.Chunk.sentences`): its cue is split
into one cue per sentence, with times proportional to the sentences'
lengths in characters inside the chunk's real duration (only the chunk's
boundaries are measured; the split inside it is an estimate).  Nothing here
splits text into sentences.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "SUBTITLE_FORMATS",
    "Cue",
    "format_srt",
    "format_subtitles",
    "format_vtt",
    "parse_subtitles",
    "sentence_cues",
]  # fmt: skip

#: Formats :func:`format_subtitles` writes (the file extension is the name).
SUBTITLE_FORMATS = ("srt", "vtt")


@dataclass(frozen=True)
class Cue:
    """One subtitle: *text* shown from *start_s* to *end_s* (seconds in its file)."""

    start_s: float
    end_s: float
    text: str


def sentence_cues(text: str, ends: Sequence[int], start_s: float, end_s: float) -> list[Cue]:
    """Cues for one chunk whose audio runs from *start_s* to *end_s*.

    Parameters
    ----------
    text : str
        The chunk's written text.
    ends : sequence of int
        Where each of its sentences ends, as offsets into the text with its
        white space collapsed (``" ".join(text.split())``; see
        :func:`~ebook2audio_dask.text.chunk.sentence_ends`).
    start_s, end_s : float
        The chunk's audio in its file, in seconds.

    Returns
    -------
    list of Cue
        One cue per sentence, the chunk's duration shared among them in
        proportion to their characters; the first starts at *start_s*, the
        last ends at *end_s*.  None for an empty chunk or an empty duration.
    """
    flat = " ".join(str(text).split())
    bounds = (0, *ends)
    sentences = [s for s in (flat[a:b].strip() for a, b in itertools.pairwise(bounds)) if s]
    if not sentences or end_s <= start_s:
        return []
    total = sum(len(s) for s in sentences)
    cues: list[Cue] = []
    done = 0
    begin = start_s
    for i, sentence in enumerate(sentences):
        done += len(sentence)
        stop = end_s if i == len(sentences) - 1 else start_s + (end_s - start_s) * done / total
        cues.append(Cue(begin, stop, sentence))
        begin = stop
    return cues


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(text: str) -> str:
    return " ".join(text.split()).replace("-->", "->")


def format_srt(cues: Iterable[Cue]) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line between."""
    blocks = []
    for n, cue in enumerate(cues, 1):
        blocks.append(
            f"{n}\n{_clock(cue.start_s, ',')} --> {_clock(cue.end_s, ',')}\n{_cue_text(cue.text)}\n"
        )
    return "\n".join(blocks)


def format_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times
    (``&<>`` escaped)."""
    blocks = ["WEBVTT\n"]
    for n, cue in enumerate(cues, 1):
        text = _cue_text(cue.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.append(f"{n}\n{_clock(cue.start_s, '.')} --> {_clock(cue.end_s, '.')}\n{text}\n")
    return "\n".join(blocks)


def format_subtitles(cues: Sequence[Cue], kind: str) -> str:
    """The cues as ``"srt"`` or ``"vtt"`` text."""
    if kind == "srt":
        return format_srt(cues)
    if kind == "vtt":
        return format_vtt(cues)
    raise ValueError(
        f"unknown subtitle format {kind!r}; choose one of {', '.join(SUBTITLE_FORMATS)}"
    )


_TIMING = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{3})\s+-->\s+(\d+):(\d\d):(\d\d)[,.](\d{3})")


def parse_subtitles(text: str) -> list[Cue]:
    """Read SRT or WebVTT text back into cues (for checks and tests)."""
    cues = []
    vtt = text.lstrip("\ufeff").startswith("WEBVTT")
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            m = _TIMING.search(line)
            if m:
                g = [int(x) for x in m.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                body = " ".join(lines[i + 1 :])
                if vtt:
                    body = body.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
                cues.append(Cue(start, end, body))
                break
    return cues
