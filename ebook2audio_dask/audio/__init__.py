"""Audio stage: WAV chunks in the chunk store and the final M4B encoder.

:mod:`~ebook2audio_dask.audio.wav` converts synthesized chunks between WAV
bytes and ``int16`` NumPy arrays; :mod:`~ebook2audio_dask.audio.m4b` streams
the book's PCM through ffmpeg into a chaptered, tagged M4B file.
"""

from .m4b import BookTags, ChapterMark, decode_to_pcm, encode_m4b, ffmpeg_exe, silence
from .wav import WAV_HEADER_BYTES, decode_wav, encode_wav, wav_info

__all__ = [
    "WAV_HEADER_BYTES",
    "BookTags",
    "ChapterMark",
    "decode_to_pcm",
    "decode_wav",
    "encode_m4b",
    "encode_wav",
    "ffmpeg_exe",
    "silence",
    "wav_info",
]
