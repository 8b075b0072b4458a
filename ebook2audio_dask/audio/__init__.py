"""Audio stage: WAV chunks in the chunk store, and the output files the merge writes.

Every name below is importable from this package (``from ebook2audio_dask.audio
import OutputSpec``); the modules, each depending only on those listed before
it:

:mod:`~ebook2audio_dask.audio.wav`
    Synthesized chunks as WAV bytes <-> ``int16`` NumPy arrays; raw silence.
:mod:`~ebook2audio_dask.audio.ffmpeg`
    Running ffmpeg: the binary, the common arguments, error messages, and
    :func:`decode_to_pcm` to read any audio file back.
:mod:`~ebook2audio_dask.audio.tags`
    Tags and chapter marks (:class:`BookTags`, :class:`ChapterMark`,
    :func:`clean_tag`) and how ffmpeg is given them.
:mod:`~ebook2audio_dask.audio.cover`
    The book's cover made a JPEG or PNG ffmpeg can attach.
:mod:`~ebook2audio_dask.audio.subtitles`
    SRT and WebVTT cues from the real chunk timings.
:mod:`~ebook2audio_dask.audio.formats`
    The output formats, one row each of :data:`FORMATS` (suffix, codec, how
    tags, chapters and cover are written), and what the merge is asked to
    write (:class:`OutputSpec`, resolved on the client).  Runs nothing.
:mod:`~ebook2audio_dask.audio.encode`
    The ffmpeg passes that write a file as its row says
    (:class:`PartEncoder`, :func:`finish_file`, :func:`normalize_part`).
:mod:`~ebook2audio_dask.audio.m4b`
    :func:`encode_m4b`: a PCM stream to an M4B file in one call.
"""

from .cover import prepare_cover
from .encode import FinalFile, PartEncoder, finish_file, normalize_part
from .ffmpeg import decode_to_pcm, ffmpeg_exe
from .formats import FORMATS, READALONG_FORMATS, SPLITS, FormatInfo, Loudness, OutputSpec
from .m4b import encode_m4b
from .subtitles import (
    SUBTITLE_FORMATS,
    Cue,
    format_srt,
    format_subtitles,
    format_vtt,
    parse_subtitles,
    sentence_cues,
)
from .tags import TAG_MAX_BYTES, BookTags, ChapterMark, clean_tag
from .wav import WAV_HEADER_BYTES, decode_wav, encode_wav, silence, wav_complete, wav_info

__all__ = [
    "FORMATS",
    "READALONG_FORMATS",
    "SPLITS",
    "SUBTITLE_FORMATS",
    "TAG_MAX_BYTES",
    "WAV_HEADER_BYTES",
    "BookTags",
    "ChapterMark",
    "Cue",
    "FinalFile",
    "FormatInfo",
    "Loudness",
    "OutputSpec",
    "PartEncoder",
    "clean_tag",
    "decode_to_pcm",
    "decode_wav",
    "encode_m4b",
    "encode_wav",
    "ffmpeg_exe",
    "finish_file",
    "format_srt",
    "format_subtitles",
    "format_vtt",
    "normalize_part",
    "parse_subtitles",
    "prepare_cover",
    "sentence_cues",
    "silence",
    "wav_complete",
    "wav_info",
]
