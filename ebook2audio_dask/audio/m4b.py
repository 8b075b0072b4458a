"""One call from a stream of PCM to a chaptered, tagged M4B audiobook.

:func:`encode_m4b` turns an iterator of raw PCM blocks (mono, signed 16-bit
little-endian), chapter marks in samples, the book's tags and optionally its
cover into one M4B.  The blocks are piped into ffmpeg as they come (AAC), so
memory use does not grow with the length of the book; a second, fast ffmpeg
pass copies that audio into an MP4 container with the ``"M4B "`` brand, the
chapters, the tags and the cover.

It is the one-call form of what the pipeline's merge task does with
:class:`~ebook2audio_dask.audio.encode.PartEncoder` (pass 1) and
:func:`~ebook2audio_dask.audio.encode.finish_file` (pass 2), which the merge
also uses for the other formats, split files and loudness normalisation.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..logs import get_logger
from .cover import prepare_cover
from .encode import PartEncoder, finish_file
from .formats import OutputSpec
from .tags import BookTags, ChapterMark, check_chapters

__all__ = ["encode_m4b"]

log = get_logger(__name__)


def encode_m4b(
    pcm: Iterable[bytes],
    *,
    sample_rate: int,
    chapters: Sequence[ChapterMark] | Callable[[], Sequence[ChapterMark]],
    tags: BookTags,
    out_path: str | os.PathLike,
    cover: bytes | None = None,
    cover_media_type: str | None = None,
    bitrate: str | None = None,
    aac_coder: str | None = None,
) -> float:
    """Encode a stream of PCM blocks into a chaptered, tagged M4B file.

    The blocks are piped into ffmpeg as they come, so the whole book is never
    held in memory.  ffmpeg encodes AAC into an MP4 container whose major
    brand is ``"M4B "``, with the moov box at the front (``faststart``).

    Parameters
    ----------
    pcm : iterable of bytes-like
        Mono, signed 16-bit little-endian PCM, in blocks of any size
        (``bytes``, ``bytearray``, ``memoryview`` or C-contiguous ``int16``
        NumPy arrays).  A block may end in the middle of a sample as long as
        the stream as a whole holds whole samples.
    sample_rate : int
        Samples per second of the stream.
    chapters : sequence of ChapterMark, or callable returning one
        Chapter marks in samples, in order and not overlapping.  Marks with
        no audio are left out (with a warning).  May be empty.  When a
        callable is given, it is called once the stream is exhausted (so
        chapter times may be computed while the audio is produced).  Either
        way the audio is encoded as it arrives (by the merge task's encoder,
        :class:`~ebook2audio_dask.audio.encode.PartEncoder`), then remuxed
        with the chapters, tags and cover without re-encoding (a fast second
        pass over the file).
    tags : BookTags
        Title, authors, language and the other tags.
    out_path : str or os.PathLike
        Local path of the file to write (overwritten if it exists).
    cover : bytes, optional
        The cover image.  JPEG and PNG are attached unchanged; GIF, WebP, BMP
        and TIFF are converted to PNG; for an SVG the largest embedded raster
        image is used.  A cover that cannot be used is left out with a
        logged warning; it never fails the book.
    cover_media_type : str, optional
        The cover's MIME type; only needed to recognise compressed SVG, as
        image formats are recognised by their content.
    aac_coder : str, optional
        ffmpeg's AAC coder: ``"twoloop"`` (ffmpeg's default, best quality) or
        ``"fast"`` (about 5x faster, slightly lower quality); ``None`` keeps
        ffmpeg's default.
    bitrate : str, optional
        AAC bit rate in ffmpeg's notation (``"64k"``); ``None``:
        ``ebook2audio.merge.bitrate``.

    Returns
    -------
    float
        Duration of the audio in seconds (samples written / *sample_rate*).

    Raises
    ------
    ValueError
        If the arguments are invalid, the stream is empty or holds a partial
        sample, or the chapter marks reach past the end of the audio.
    RuntimeError
        If ffmpeg is missing or fails; the message ends with ffmpeg's own.
    Exception
        Whatever the *pcm* iterator raises is propagated.

    Notes
    -----
    On any error the ffmpeg process is killed and *out_path* is removed.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample rate must be an integer, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    sample_rate = int(sample_rate)
    two_pass = callable(chapters)
    marks = None if two_pass else check_chapters(chapters)  # bad marks fail before any encoding
    out_path = Path(out_path)
    spec = OutputSpec(
        format="m4b", bitrate=None if bitrate is None else str(bitrate), aac_coder=aac_coder
    )
    with tempfile.TemporaryDirectory(prefix="ebook2audio-m4b-", dir=out_path.parent) as tmp:
        workdir = Path(tmp)
        # Pass 1 (the merge task's own encoder): the stream as it comes, AAC in MP4, no tags.
        audio_path = workdir / "audio.m4a"
        encoder = PartEncoder(spec, sample_rate, audio_path)
        try:
            for block in pcm:
                encoder.write(block)
            n_samples = encoder.close()
        except BaseException:
            encoder.kill()
            raise
        if two_pass:
            marks = check_chapters(chapters())
        if marks and marks[-1].end_sample > n_samples:
            raise ValueError(
                f"the chapters end at sample {marks[-1].end_sample} "
                f"but the audio has only {n_samples} samples"
            )
        # Pass 2: copy the AAC stream, adding chapters, tags and cover (fast).
        cover_path = prepare_cover(bytes(cover), cover_media_type, workdir) if cover else None
        finish_file(
            spec,
            audio_path,
            out_path,
            sample_rate=sample_rate,
            chapters=marks,
            tags=tags,
            cover_path=cover_path,
            workdir=workdir,
        )

    log.debug("wrote %s: %d samples at %d Hz", out_path, n_samples, sample_rate)
    return n_samples / sample_rate
