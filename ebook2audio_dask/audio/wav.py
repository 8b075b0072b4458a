"""WAV bytes <-> int16 NumPy arrays, for the synthesized-chunk store.

Every chunk of speech an engine produces is stored as a small, self-contained
WAV file: mono, 16-bit signed little-endian PCM, at the voice's sample rate.
These helpers write and read such files with the standard :mod:`wave` module
and refuse anything else, so that a chunk that was cut short by a crashed
worker or a half-finished upload is noticed instead of being merged into the
book as a glitch.  :func:`silence` makes raw PCM of silence.
"""

from __future__ import annotations

import io
import wave
from typing import BinaryIO

import numpy as np

__all__ = ["WAV_HEADER_BYTES", "decode_wav", "encode_wav", "silence", "wav_complete", "wav_info"]

#: Size of the header :func:`encode_wav` writes (the canonical RIFF/fmt/data
#: layout).  Reading this many bytes of a stored chunk is enough for
#: :func:`wav_info`.
WAV_HEADER_BYTES = 44

_PCM16 = np.dtype("<i2")


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Encode mono 16-bit samples as a WAV file.

    Parameters
    ----------
    samples : numpy.ndarray
        One-dimensional array of ``int16`` samples (any byte order).
    sample_rate : int
        Samples per second, e.g. ``22050``.

    Returns
    -------
    bytes
        A complete WAV file with a 44-byte header (:data:`WAV_HEADER_BYTES`)
        followed by the little-endian PCM data.

    Raises
    ------
    ValueError
        If *samples* is not a 1-D ``int16`` array or *sample_rate* is not a
        positive integer.
    """
    samples = np.asarray(samples)
    if samples.dtype.kind != "i" or samples.dtype.itemsize != 2:
        raise ValueError(f"WAV samples must be int16, got {samples.dtype}")
    if samples.ndim != 1:
        raise ValueError(f"WAV samples must be mono (1-D), got shape {samples.shape}")
    _check_rate(sample_rate)
    pcm = np.ascontiguousarray(samples, dtype=_PCM16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.setnframes(len(pcm))  # header is right the first time, no seek-back
        w.writeframesraw(pcm.tobytes())
    return buf.getvalue()


def wav_complete(data: bytes) -> bool:
    """True when *data* is a whole canonical WAV file: its header's RIFF size and
    data-chunk size both match the bytes present (a truncated upload fails)."""
    if (
        len(data) < WAV_HEADER_BYTES
        or data[:4] != b"RIFF"
        or data[8:12] != b"WAVE"
        or data[36:40] != b"data"
    ):
        return False
    riff = int.from_bytes(data[4:8], "little")
    payload = int.from_bytes(data[40:44], "little")
    return riff == len(data) - 8 and payload == len(data) - WAV_HEADER_BYTES


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a mono 16-bit WAV file.

    Parameters
    ----------
    data : bytes-like
        The whole WAV file.

    Returns
    -------
    samples : numpy.ndarray
        The samples as a writable native-order ``int16`` array.
    sample_rate : int
        Samples per second.

    Raises
    ------
    ValueError
        If the file is not a WAV file, not mono 16-bit PCM, or holds fewer
        bytes of audio than its header announces (truncated file).
    """
    with _open(data) as w:
        rate, n_samples = _info(w)
        frames = w.readframes(n_samples)
    if len(frames) != 2 * n_samples:
        raise ValueError(
            f"truncated WAV file: header announces {n_samples} samples "
            f"({2 * n_samples} bytes), only {len(frames)} bytes present"
        )
    samples = np.frombuffer(frames, dtype=_PCM16).astype(np.int16)  # copy: writable
    return samples, rate


def wav_info(data: bytes | BinaryIO) -> tuple[int, int]:
    """Read the sample rate and length of a mono 16-bit WAV file from its header.

    Only the header is parsed, so *data* may be just the first bytes of the
    file (:data:`WAV_HEADER_BYTES` for files written by :func:`encode_wav`)
    or an open binary file, which is read no further than the start of the
    audio data.  The audio itself is not checked; use :func:`decode_wav` for
    that.

    Parameters
    ----------
    data : bytes-like or binary file object
        The WAV file, or at least its header.

    Returns
    -------
    sample_rate : int
        Samples per second.
    n_samples : int
        Number of samples the header announces.

    Raises
    ------
    ValueError
        If the header is incomplete or garbled, or the format is not mono
        16-bit PCM.
    """
    with _open(data) as w:
        return _info(w)


def silence(n_samples: int) -> bytes:
    """Return *n_samples* of silence as int16 PCM bytes.

    Parameters
    ----------
    n_samples : int
        Number of samples (not bytes).

    Returns
    -------
    bytes
        ``2 * n_samples`` zero bytes.
    """
    if n_samples < 0:
        raise ValueError(f"cannot make {n_samples} samples of silence")
    return bytes(2 * int(n_samples))


def _check_rate(sample_rate: int) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample rate must be an integer, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")


def _open(data) -> wave.Wave_read:
    fileobj = data if hasattr(data, "read") else io.BytesIO(memoryview(data))
    try:
        return wave.open(fileobj, "rb")
    except (wave.Error, EOFError, OSError, ValueError) as exc:
        # EOFError: the RIFF/fmt/data headers are cut short.
        raise ValueError(f"not a readable WAV file: {exc or type(exc).__name__}") from None


def _info(w: wave.Wave_read) -> tuple[int, int]:
    if w.getcomptype() != "NONE":
        raise ValueError(f"compressed WAV files are not supported ({w.getcompname()})")
    if w.getnchannels() != 1:
        raise ValueError(f"WAV file must be mono, it has {w.getnchannels()} channels")
    if w.getsampwidth() != 2:
        raise ValueError(f"WAV file must be 16-bit, it is {8 * w.getsampwidth()}-bit")
    rate = w.getframerate()
    if rate <= 0:
        raise ValueError(f"WAV file has an invalid sample rate ({rate})")
    return rate, w.getnframes()
