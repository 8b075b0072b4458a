"""Output formats: M4B, MP3, Opus, FLAC and WAV, whole or split, optionally loudness-normalised.

Writing a book is two ffmpeg passes per output file, as for the M4B:

1. :class:`PartEncoder` encodes the PCM the merge streams into it (through
   ffmpeg's ``loudnorm`` filter with :class:`Loudness`), into a plain file
   without tags.  A split book opens one encoder after the other, so memory
   stays flat whatever the book's length.
2. :func:`finish_file` copies that audio (no re-encoding) into the final
   file, adding tags, chapters and the cover; where ffmpeg cannot write a tag
   (FLAC chapters, the Opus cover), :mod:`mutagen` adds it.  The tags go to
   ffmpeg as ``-metadata`` arguments (no escaping), the chapters in an
   FFMETADATA1 file (escaped as ffmpeg reads it, see :func:`.m4b._escape`);
   every value has been cleaned by :func:`~.m4b.clean_tag`, so the files
   hold exactly the titles the report shows.

========  ============  ================================================  ============
format    codec         tags, chapters, cover                             size limits
========  ============  ================================================  ============
``m4b``   AAC in MP4    iTunes tags, Nero/QuickTime chapters, ``covr``    none (co64)
``mp3``   LAME MP3      ID3v2.3 (+ID3v1), ``CHAP``/``CTOC``, ``APIC``      none
``opus``  Opus in Ogg   Vorbis comments, ``CHAPTERxxx``, picture block    none
``flac``  FLAC          Vorbis comments, ``CHAPTERxxx``, ``PICTURE``       none
``wav``   PCM s16le     ``LIST/INFO`` only (chapters in the report)       RF64 > 4 GiB
========  ============  ================================================  ============
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
from typing import Any

from ..logs import get_logger
from .m4b import (
    BookTags,
    ChapterMark,
    _check_chapters,
    _container_args,
    _iso639_2,
    _mux_args,
    _stderr_tail,
    ffmpeg_exe,
)

__all__ = [
    "FORMATS",
    "SPLITS",
    "FinalFile",
    "FormatInfo",
    "Loudness",
    "OutputSpec",
    "PartEncoder",
    "finish_file",
    "normalize_part",
]

log = get_logger(__name__)

#: Ways to split a book: one file per chapter, or parts of at most N hours.
SPLITS = ("chapters", "hours")


@dataclass(frozen=True)
class FormatInfo:
    """How one output format is encoded and tagged.

    Attributes
    ----------
    name : str
        ``--format`` value.
    ext : str
        File extension of the final file.
    muxer : str
        ffmpeg muxer of the final file (and of the pass-1 file).
    codec : tuple of str
        ffmpeg codec options; ``{bitrate}`` is filled in.
    cache : bool
        Whether the pass-1 audio is kept in the chunk store for reruns (not for
        FLAC and WAV: as large as the chunks themselves and as fast to make
        again from them).
    chapters : bool
        Whether the file holds chapter marks.
    """

    name: str
    ext: str
    muxer: str
    codec: tuple[str, ...]
    cache: bool
    chapters: bool = True


FORMATS: dict[str, FormatInfo] = {
    "m4b": FormatInfo("m4b", ".m4b", "mp4", ("-c:a", "aac", "-b:a", "{bitrate}"), cache=True),
    "mp3": FormatInfo(
        "mp3", ".mp3", "mp3", ("-c:a", "libmp3lame", "-b:a", "{bitrate}"), cache=True
    ),
    "opus": FormatInfo(
        "opus", ".opus", "ogg", ("-c:a", "libopus", "-b:a", "{bitrate}"), cache=True
    ),
    "flac": FormatInfo("flac", ".flac", "flac", ("-c:a", "flac"), cache=False),
    "wav": FormatInfo("wav", ".wav", "wav", ("-c:a", "pcm_s16le"), cache=False, chapters=False),
}


@dataclass(frozen=True)
class Loudness:
    """EBU R128 loudness normalisation targets of ffmpeg's ``loudnorm`` filter.

    Parameters
    ----------
    integrated : float
        Integrated loudness target in LUFS (``I``), -16 by default.
    true_peak : float
        Maximum true peak in dBTP (``TP``), -1.5 by default.
    lra : float
        Loudness range target in LU (``LRA``), 11 by default.
    """

    integrated: float = -16.0
    true_peak: float = -1.5
    lra: float = 11.0

    def filter(self, sample_rate: int, measured: dict[str, str] | None = None) -> str:
        """The ffmpeg filter chain, back at *sample_rate*.

        Without *measured*: one pass, dynamic mode.  With the figures a first
        pass measured (:class:`LoudnessMeter`): loudnorm's second pass,
        linear (one gain for the whole book) when the true-peak target
        allows it, else dynamic with the measured offset.  ``loudnorm`` works
        at 192 kHz internally; ``aresample`` brings the audio back to the
        book's rate (the sample count is unchanged).
        """
        chain = f"loudnorm=I={self.integrated:g}:TP={self.true_peak:g}:LRA={self.lra:g}"
        if measured:
            chain += (f":measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
                      f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
                      f":offset={measured['target_offset']}:linear=true")  # fmt: skip
        return f"{chain},aresample={int(sample_rate)}"


@dataclass(frozen=True)
class OutputSpec:
    """What the merge writes: format, split, loudness and subtitles.

    Made on the client by :meth:`resolve` (arguments, else the
    ``ebook2audio.output`` config), then handed to the merge task.
    """

    format: str = "m4b"
    split: str | None = None  # None, "chapters" or "hours"
    split_hours: float | None = None
    loudnorm: Loudness | None = None
    subtitles: str | None = None  # None, "srt" or "vtt"
    bitrate: str = "64k"
    aac_coder: str | None = None

    @property
    def info(self) -> FormatInfo:
        return FORMATS[self.format]

    @classmethod
    def resolve(cls, format: str | None = None, split: str | None = None, split_hours: float | None = None,
                loudnorm: bool | None = None, subtitles: str | None = None) -> OutputSpec:  # fmt: skip
        """Arguments, else ``ebook2audio.output.*``; raises :class:`~ebook2audio_dask.errors.UsageError`."""
        from .. import config
        from ..errors import UsageError

        fmt = str(config.get("output.format", "m4b", override=format)).lower().lstrip(".")
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        hours = config.get("output.split-hours", None, override=split_hours)
        how = config.get("output.split", None, override=split)
        how = None if how in (None, "", "none", False) else str(how).lower()
        if hours is not None:
            try:
                hours = float(hours)
            except (TypeError, ValueError):
                raise UsageError(f"split hours must be a number, got {hours!r}") from None
            if not hours > 0:
                raise UsageError(f"split hours must be positive, got {hours:g}")
            if how not in (None, "hours"):
                raise UsageError("--split chapters and --split-hours cannot be combined")
            how = "hours"
        elif how == "hours":
            raise UsageError("--split hours needs --split-hours N")
        if how not in (None, *SPLITS):
            raise UsageError(f"unknown split {how!r}; choose chapters, or give --split-hours N")
        subs = config.get("output.subtitles", None, override=subtitles)
        subs = None if subs in (None, "", "none", False) else str(subs).lower()
        if subs not in (None, "srt", "vtt"):
            raise UsageError(f"unknown subtitle format {subs!r}; choose srt or vtt")
        loud = None
        if bool(config.get("output.loudnorm", False, override=loudnorm)):
            conf = config.get("output.loudness", None) or {}
            loud = Loudness(
                integrated=float(conf.get("integrated", -16.0)),
                true_peak=float(conf.get("true-peak", -1.5)),
                lra=float(conf.get("range", 11.0)),
            )
        return cls(format=fmt, split=how, split_hours=hours if how == "hours" else None, loudnorm=loud,
                   subtitles=subs, bitrate=str(config.get("merge.bitrate", "64k")),
                   aac_coder=config.get("merge.aac-coder", None) if fmt == "m4b" else None)  # fmt: skip

    def cache_token(self) -> dict[str, Any]:
        """What, besides the chunks and the bitrate, decides the pass-1 audio (empty for plain M4B,
        so audio kept before formats existed is still found)."""
        token: dict[str, Any] = {}
        if self.format != "m4b":
            token["format"] = self.format
        if self.loudnorm is not None:
            token["loudnorm"] = [
                self.loudnorm.integrated,
                self.loudnorm.true_peak,
                self.loudnorm.lra,
            ]
        return token


_HEAD = ("-hide_banner", "-nostats", "-nostdin", "-loglevel", "error", "-y")

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
    """

    def __init__(self, spec: OutputSpec, sample_rate: int, path: str | os.PathLike, *, measure: bool = False,
                 final: FinalFile | None = None):  # fmt: skip
        self.path = Path(path)
        self.measure = measure
        self.final = final
        self.samples = 0
        self._bytes = 0
        info = spec.info
        codec = [a.format(bitrate=spec.bitrate) for a in info.codec]
        if spec.aac_coder and spec.format == "m4b":
            codec += ["-aac_coder", str(spec.aac_coder)]
        head = [
            ("info" if measure and a == "error" else a) for a in _HEAD
        ]  # loudnorm's figures are info
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
            cmd += ["-map", "0:a", *codec]
            if spec.format == "wav":
                cmd += ["-rf64", "auto"]
            cmd += ["-f", info.muxer, str(self.path)]
        self._stderr = tempfile.TemporaryFile(dir=self.path.parent)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     bufsize=_WRITE_SIZE)  # fmt: skip

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
                f"ffmpeg stopped while encoding {self.path.name}: {_stderr_tail(self._stderr)}"
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
                        f"ffmpeg failed measuring the loudness: {_stderr_tail(self._stderr)}"
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
                raise RuntimeError(f"ffmpeg failed (exit status {status}) writing {self.path.name}: "
                                   f"{_stderr_tail(self._stderr)}")  # fmt: skip
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


def normalize_part(spec: OutputSpec, sample_rate: int, source: str | os.PathLike, path: str | os.PathLike,
                   measured: dict[str, str]) -> None:  # fmt: skip
    """Loudnorm's second pass: the lossless pass-1 audio *source* → *path* in *spec*'s format."""
    info = spec.info
    codec = [a.format(bitrate=spec.bitrate) for a in info.codec]
    if spec.aac_coder and spec.format == "m4b":
        codec += ["-aac_coder", str(spec.aac_coder)]
    cmd = [ffmpeg_exe(), *_HEAD, "-i", str(source), "-af", spec.loudnorm.filter(sample_rate, measured),
           "-map", "0:a", *codec] + (["-rf64", "auto"] if spec.format == "wav" else [])  # fmt: skip
    done = subprocess.run(
        cmd + ["-f", info.muxer, str(path)], stdin=subprocess.DEVNULL, capture_output=True
    )
    if done.returncode != 0:
        Path(path).unlink(missing_ok=True)
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RuntimeError(f"ffmpeg failed normalising {Path(path).name}: {' | '.join(tail)}")


@dataclass(frozen=True)
class FinalFile:
    """What makes a finished file: its format, tags, chapter marks and cover.

    *cover_path* is a JPEG or PNG prepared by :func:`~.m4b.prepare_cover`;
    *workdir* holds the ffmetadata file written for ffmpeg.
    """

    spec: OutputSpec
    tags: BookTags
    marks: tuple[ChapterMark, ...]
    sample_rate: int
    cover_path: Path | None
    workdir: Path

    @classmethod
    def make(cls, spec: OutputSpec, *, sample_rate: int, chapters: Sequence[ChapterMark], tags: BookTags,
             cover_path: Path | None, workdir: Path) -> FinalFile:  # fmt: skip
        marks = tuple(_check_chapters(chapters)) if spec.info.chapters else ()
        return cls(spec, tags, marks, int(sample_rate), cover_path, Path(workdir))


def _final_args(
    spec: OutputSpec, final: FinalFile, sample_rate: int, out_path: Path
) -> tuple[list[str], list[str]]:
    """ffmpeg arguments after audio input 0: (inputs, maps and tags; muxer options and path), around the codec."""
    if spec.format == "m4b":
        before = _mux_args(final.tags, final.marks, sample_rate, final.cover_path, final.workdir)
        return before, _container_args(final.tags, out_path)
    ffmpeg_cover = final.cover_path if spec.format in ("mp3", "flac") else None
    vorbis = spec.format in ("opus", "flac")  # chapters as Vorbis comments, written by mutagen
    before = _mux_args(
        final.tags, [] if vorbis else final.marks, sample_rate, ffmpeg_cover, final.workdir
    )
    after: list[str] = []
    language = _iso639_2(final.tags.language)
    if language and spec.format != "wav":
        after += ["-metadata", f"language={language}"]
    if spec.format == "mp3":
        after += ["-id3v2_version", "3", "-write_id3v1", "1"]
        if ffmpeg_cover is not None:
            after += [
                "-metadata:s:v",
                "title=Album cover",
                "-metadata:s:v",
                "comment=Cover (front)",
            ]
    if spec.format == "wav":
        after += ["-rf64", "auto"]
    return before, after + ["-f", spec.info.muxer, str(out_path)]


def _after_ffmpeg(final: FinalFile, out_path: Path) -> None:
    """What mutagen adds after ffmpeg: Vorbis-comment chapters (Opus, FLAC) and the Opus cover."""
    if final.spec.format in ("opus", "flac") and final.marks:
        _vorbis_chapters(out_path, final.spec.format, final.marks, final.sample_rate)
    if final.spec.format == "opus" and final.cover_path is not None:
        _opus_cover(out_path, final.cover_path)


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

    *cover_path* is a JPEG or PNG prepared by :func:`~.m4b.prepare_cover`.
    (When the chapter times are known before encoding, a :class:`PartEncoder`
    given a :class:`FinalFile` writes the finished file in one pass instead.)
    """
    out_path = Path(out_path)
    final = FinalFile.make(spec, sample_rate=sample_rate, chapters=chapters, tags=tags, cover_path=cover_path,
                           workdir=workdir)  # fmt: skip
    before, after = _final_args(spec, final, int(sample_rate), out_path)
    cmd = [ffmpeg_exe(), *_HEAD, "-i", str(audio_path), *before, "-c:a", "copy", *after]
    with tempfile.TemporaryFile(dir=workdir) as stderr:
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"ffmpeg failed (exit status {done.returncode}) writing {out_path.name}: "
                                   f"{_stderr_tail(stderr)}")  # fmt: skip
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


def _vorbis_chapters(path: Path, fmt: str, marks: Sequence[ChapterMark], rate: int) -> None:
    """CHAPTERxxx / CHAPTERxxxNAME Vorbis comments of a FLAC or Opus file.

    ffmpeg's FLAC muxer writes no chapters, and its Ogg muxer rounds a
    chapter's seconds but not its milliseconds (``libavformat/vorbiscomment.c``:
    a chapter at 222.982 s is written ``00:03:43.982``, a second late), so
    :mod:`mutagen` writes them, times rounded to the millisecond.
    """
    from mutagen.flac import FLAC
    from mutagen.oggopus import OggOpus

    f = FLAC(str(path)) if fmt == "flac" else OggOpus(str(path))
    for i, mark in enumerate(marks):
        f[f"CHAPTER{i:03d}"] = _chapter_clock(mark.start_sample, rate)
        f[f"CHAPTER{i:03d}NAME"] = mark.title
    f.save()


def _opus_cover(path: Path, cover_path: Path) -> None:
    """The cover as a METADATA_BLOCK_PICTURE comment (ffmpeg's Ogg muxer writes no pictures)."""
    from mutagen.flac import Picture
    from mutagen.oggopus import OggOpus

    pic = Picture()
    pic.type = 3  # front cover
    pic.mime = "image/png" if cover_path.suffix == ".png" else "image/jpeg"
    pic.desc = "Cover (front)"
    pic.data = cover_path.read_bytes()
    f = OggOpus(str(path))
    f["METADATA_BLOCK_PICTURE"] = [base64.b64encode(pic.write()).decode("ascii")]
    f.save()
