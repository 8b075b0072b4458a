"""Audio stage: WAV chunks in the chunk store and the final M4B encoder.

:mod:`~ebook2audio_dask.audio.wav` converts synthesized chunks between WAV
bytes and ``int16`` NumPy arrays; :mod:`~ebook2audio_dask.audio.m4b` streams
the book's PCM through ffmpeg into a chaptered, tagged M4B file.
"""

from .formats import FORMATS, FinalFile, OutputSpec, PartEncoder, finish_file, normalize_part
from .m4b import (
    TAG_MAX_BYTES,
    BookTags,
    ChapterMark,
    clean_tag,
    decode_to_pcm,
    encode_m4b,
    ffmpeg_exe,
    prepare_cover,
    silence,
)
from .subtitles import (
    Cue,
    chunk_cues,
    format_srt,
    format_subtitles,
    format_vtt,
    parse_subtitles,
    split_cue_text,
)
from .wav import WAV_HEADER_BYTES, decode_wav, encode_wav, wav_complete, wav_info

__all__ = [
    "FORMATS",
    "TAG_MAX_BYTES",
    "WAV_HEADER_BYTES",
    "BookTags",
    "ChapterMark",
    "Cue",
    "FinalFile",
    "OutputSpec",
    "PartEncoder",
    "chunk_cues",
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
    "silence",
    "split_cue_text",
    "wav_complete",
    "wav_info",
]
