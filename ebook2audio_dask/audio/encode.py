"""Writing the output files: the ffmpeg passes, as each format's row says.

Writing a book is two ffmpeg passes per output file:

1. :class:`PartEncoder` encodes the PCM the merge streams into it (through
   ffmpeg's ``loudnorm`` filter with
   :class:`~ebook2audio_dask.audio.formats.Loudness`), into a plain file
   without tags.  A split book opens one encoder after the other, so memory
   stays flat whatever the book's length.
2. :func:`finish_file` copies that audio (no re-encoding) into the final
   file, adding tags, chapters and the cover; where ffmpeg cannot write a tag
   (FLAC chapters, the Opus cover), :mod:`mutagen` adds it.  The tags go to
   ffmpeg as ``-metadata`` arguments (no escaping), the chapters in an
   FFMETADATA1 file (see :mod:`~ebook2audio_dask.audio.tags`); every value
   has been cleaned by :func:`~ebook2audio_dask.audio.tags.clean_tag`, so the
   files hold exactly the titles the report shows.

When the chapter times are known before encoding, a :class:`PartEncoder`
given a :class:`FinalFile` writes the finished file in one pass instead.
With loudness normalisation, :func:`normalize_part` is loudnorm's second
pass.  How each format's arguments, chapters, cover and language are written
is read from its row (:class:`~ebook2audio_dask.audio.formats.FormatInfo`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .ffmpeg import FFMPEG_HEAD, ffmpeg_exe, stderr_lines, stderr_tail
from .formats import OutputSpec
from .tags import BookTags, ChapterMark, check_chapters, ffmetadata, iso639_2, tag_args

__all__ = ["FinalFile", "PartEncoder", "finish_file", "normalize_part"]


#: Pipe buffer of a pass-1 encoder (small writes are gathered).
_WRITE_SIZE = 256 * 1024


class PartEncoder:
    """One ffmpeg process turning PCM written to it into a pass-1 file (no tags).

    Parameters
    ----------
    spec : OutputSpec
        Format, bitrate, coder and loudness.
    sample_rate : int
        Rate of the mono s16le PCM written.
    path : str or os.PathLike
        The file to write.
    measure : bool
        Only measure the loudness (loudnorm's first pass, no file): the
        figures are in ``measured`` after :meth:`close`.
    final : FinalFile, optional
        Write the finished file (tags, chapters, cover) in this one pass.
    """

    def __init__(
        self,
        spec: OutputSpec,
        sample_rate: int,
        path: str | os.PathLike,
        *,
        measure: bool = False,
        final: FinalFile | None = None,
    ):
        self.path = Path(path)
        self.measure = measure
        self.final = final
        self.samples = 0
        self._bytes = 0
        info = spec.info
        codec = spec.codec_args()
        # loudnorm's figures are info
        head = [("info" if measure and a == "error" else a) for a in FFMPEG_HEAD]
        cmd = [
            ffmpeg_exe(),
            *head,
            "-f",
            "s16le",
            "-ar",
            str(int(sample_rate)),
            "-ac",
            "1",
            "-i",
            "pipe:0",
        ]
        if measure:  # a LoudnessMeter: loudnorm's first pass, no output
            cmd += [
                "-af",
                spec.loudnorm.filter(sample_rate).split(",")[0] + ":print_format=json",
                "-f",
                "null",
                "-",
            ]
        elif final is not None:  # one pass: the finished file, with its tags, chapters and cover
            if spec.loudnorm is not None:
                raise ValueError("loudness normalisation needs two passes")
            before, after = _final_args(spec, final, int(sample_rate), self.path)
            cmd += before + codec + after
        else:
            if spec.loudnorm is not None:
                cmd += ["-af", spec.loudnorm.filter(sample_rate)]
            cmd += ["-map", "0:a", *codec, *info.muxer_args, "-f", info.muxer, str(self.path)]
        self._stderr = tempfile.TemporaryFile(dir=self.path.parent)  # noqa: SIM115  (closed by close/kill)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            bufsize=_WRITE_SIZE,
        )

    def write(self, block) -> None:
        """Feed one block of PCM (bytes-like)."""
        size = memoryview(block).nbytes
        if not size:
            return
        try:
            self.proc.stdin.write(block)
        except BrokenPipeError:
            self.proc.wait()
            raise RuntimeError(
                f"ffmpeg stopped while encoding {self.path.name}: {stderr_tail(self._stderr)}"
            ) from None
        self._bytes += size
        self.samples = self._bytes // 2

    def close(self) -> int:
        """Finish the file; returns the samples written.

        Raises ValueError for an empty stream or one that ends in the middle
        of a sample, RuntimeError if ffmpeg failed; the file is removed then.
        """
        try:
            if self.measure:
                self.proc.stdin.close()
                if self.proc.wait() != 0:
                    raise RuntimeError(
                        f"ffmpeg failed measuring the loudness: {stderr_tail(self._stderr)}"
                    )
                self._stderr.seek(0)
                text = self._stderr.read().decode("utf-8", "replace")
                self.measured = json.loads(re.findall(r"\{[^{}]*\}", text)[-1])
                return self.samples
            if self._bytes == 0:
                raise ValueError("no audio to encode (the PCM stream is empty)")
            if self._bytes % 2:
                raise ValueError(f"PCM stream ends with a partial sample ({self._bytes} bytes)")
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            status = self.proc.wait()
            if status != 0:
                raise RuntimeError(
                    f"ffmpeg failed (exit status {status}) writing {self.path.name}: "
                    f"{stderr_tail(self._stderr)}"
                )
            if self.final is not None:
                _after_ffmpeg(self.final, self.path)
            return self.samples
        except BaseException:
            self.kill()
            raise
        finally:
            self._stderr.close()

    def kill(self) -> None:
        """Stop ffmpeg at once and remove the file (on errors)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if not self._stderr.closed:
            self._stderr.close()
        self.path.unlink(missing_ok=True)


def normalize_part(
    spec: OutputSpec,
    sample_rate: int,
    source: str | os.PathLike,
    path: str | os.PathLike,
    measured: dict[str, str],
) -> None:
    """Loudnorm's second pass: the lossless pass-1 audio *source* → *path* in *spec*'s format."""
    info = spec.info
    cmd = [
        ffmpeg_exe(),
        *FFMPEG_HEAD,
        "-i",
        str(source),
        "-af",
        spec.loudnorm.filter(sample_rate, measured),
        "-map",
        "0:a",
        *spec.codec_args(),
        *info.muxer_args,
        "-f",
        info.muxer,
        str(path),
    ]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        Path(path).unlink(missing_ok=True)
        tail = stderr_lines(done.stderr)[-3:]
        raise RuntimeError(f"ffmpeg failed normalising {Path(path).name}: {' | '.join(tail)}")


@dataclass(frozen=True)
class FinalFile:
    """What makes a finished file: its format, tags, chapter marks and cover.

    *cover_path* is a JPEG or PNG prepared by
    :func:`~ebook2audio_dask.audio.cover.prepare_cover`;
    *workdir* holds the ffmetadata file written for ffmpeg.
    """

    spec: OutputSpec
    tags: BookTags
    marks: tuple[ChapterMark, ...]
    sample_rate: int
    cover_path: Path | None
    workdir: Path

    @classmethod
    def make(
        cls,
        spec: OutputSpec,
        *,
        sample_rate: int,
        chapters: Sequence[ChapterMark],
        tags: BookTags,
        cover_path: Path | None,
        workdir: Path,
    ) -> FinalFile:
        marks = tuple(check_chapters(chapters)) if spec.info.chapters else ()
        return cls(spec, tags, marks, int(sample_rate), cover_path, Path(workdir))


def _mux_args(
    tags: BookTags,
    chapters: Sequence[ChapterMark],
    sample_rate: int,
    cover_path: Path | None,
    workdir: Path,
) -> list[str]:
    """Inputs 1 (chapters) and 2 (cover), the maps and the tags, after audio input 0."""
    meta_path = workdir / "metadata.txt"
    meta_path.write_text(ffmetadata(chapters, sample_rate), encoding="utf-8")
    args = ["-f", "ffmetadata", "-i", str(meta_path)]
    if cover_path is not None:
        args += ["-f", f"{cover_path.suffix[1:]}_pipe", "-i", str(cover_path)]
    args += ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1", *tag_args(tags)]
    if cover_path is not None:
        args += ["-map", "2:v", "-c:v", "copy", "-disposition:v:0", "attached_pic"]
    return args


def _final_args(
    spec: OutputSpec, final: FinalFile, sample_rate: int, out_path: Path
) -> tuple[list[str], list[str]]:
    """ffmpeg arguments after audio input 0, around the codec: (inputs, maps and tags;
    language, muxer options and path), as *spec*'s row of FORMATS says."""
    info = spec.info
    ffmpeg_cover = final.cover_path if info.cover == "ffmpeg" else None
    marks = final.marks if info.chapters == "ffmetadata" else []
    before = _mux_args(final.tags, marks, sample_rate, ffmpeg_cover, final.workdir)
    after: list[str] = []
    language = iso639_2(final.tags.language)
    if language and info.language:
        after += [info.language_option, f"language={language}"]
    after += info.final_args
    if ffmpeg_cover is not None:
        after += info.cover_args
    return before, [*after, *info.muxer_args, "-f", info.muxer, str(out_path)]


def _after_ffmpeg(final: FinalFile, out_path: Path) -> None:
    """What mutagen adds after ffmpeg: Vorbis-comment chapters (Opus, FLAC) and cover (Opus)."""
    info = final.spec.info
    if info.chapters == "vorbis" and final.marks:
        _vorbis_chapters(out_path, final.marks, final.sample_rate)
    if info.cover == "vorbis" and final.cover_path is not None:
        _vorbis_cover(out_path, final.cover_path)


def finish_file(
    spec: OutputSpec,
    audio_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    sample_rate: int,
    chapters: Sequence[ChapterMark],
    tags: BookTags,
    cover_path: Path | None,
    workdir: Path,
) -> None:
    """Pass 2: copy the pass-1 audio into *out_path* with tags, chapters and cover.

    *cover_path* is a JPEG or PNG prepared by
    :func:`~ebook2audio_dask.audio.cover.prepare_cover`.
    (When the chapter times are known before encoding, a :class:`PartEncoder`
    given a :class:`FinalFile` writes the finished file in one pass instead.)
    """
    out_path = Path(out_path)
    final = FinalFile.make(
        spec,
        sample_rate=sample_rate,
        chapters=chapters,
        tags=tags,
        cover_path=cover_path,
        workdir=workdir,
    )
    before, after = _final_args(spec, final, int(sample_rate), out_path)
    cmd = [ffmpeg_exe(), *FFMPEG_HEAD, "-i", str(audio_path), *before, "-c:a", "copy", *after]
    with tempfile.TemporaryFile(dir=workdir) as stderr:
        try:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"ffmpeg failed (exit status {done.returncode}) writing {out_path.name}: "
                    f"{stderr_tail(stderr)}"
                )
            _after_ffmpeg(final, out_path)
        except BaseException:
            out_path.unlink(missing_ok=True)
            raise


def _chapter_clock(sample: int, rate: int) -> str:
    ms = int(round(sample * 1000 / rate))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _mutagen_file(path: Path):
    """The finished file, opened by mutagen (its type recognised from the content)."""
    import mutagen

    f = mutagen.File(str(path))
    if f is None:
        raise RuntimeError(f"mutagen does not recognise {path.name}")
    return f


def _vorbis_chapters(path: Path, marks: Sequence[ChapterMark], rate: int) -> None:
    """CHAPTERxxx / CHAPTERxxxNAME Vorbis comments of a FLAC or Opus file.

    ffmpeg's FLAC muxer writes no chapters, and its Ogg muxer rounds a
    chapter's seconds but not its milliseconds (``libavformat/vorbiscomment.c``:
    a chapter at 222.982 s is written ``00:03:43.982``, a second late), so
    :mod:`mutagen` writes them, times rounded to the millisecond.
    """
    f = _mutagen_file(path)
    for i, mark in enumerate(marks):
        f[f"CHAPTER{i:03d}"] = _chapter_clock(mark.start_sample, rate)
        f[f"CHAPTER{i:03d}NAME"] = mark.title
    f.save()


def _vorbis_cover(path: Path, cover_path: Path) -> None:
    """The cover as a METADATA_BLOCK_PICTURE comment (ffmpeg's Ogg muxer writes no pictures)."""
    from mutagen.flac import Picture

    pic = Picture()
    pic.type = 3  # front cover
    pic.mime = "image/png" if cover_path.suffix == ".png" else "image/jpeg"
    pic.desc = "Cover (front)"
    pic.data = cover_path.read_bytes()
    f = _mutagen_file(path)
    f["METADATA_BLOCK_PICTURE"] = [base64.b64encode(pic.write()).decode("ascii")]
    f.save()
