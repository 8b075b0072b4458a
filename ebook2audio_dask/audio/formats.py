"""Output formats: one table row per format, and what the merge is asked to write.

:data:`FORMATS` is the registry of output formats: one :class:`FormatInfo`
row per ``--format`` value says the file's suffix, its codec and muxer
arguments, and how its tags, chapters, cover and language are written.
:meth:`OutputSpec.resolve` validates ``--format`` against it (on the client,
from the arguments and the ``ebook2audio.output`` config), and
``docs/outputs.md`` lists its rows (a test checks both agree).  A new format
is one row, plus a branch in :mod:`~ebook2audio_dask.audio.encode` only if
it needs a muxing step that ffmpeg cannot do, as the mutagen steps for
Vorbis-comment chapters and covers.  This module runs nothing: the ffmpeg
passes that read the rows are in :mod:`~ebook2audio_dask.audio.encode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .subtitles import SUBTITLE_FORMATS

__all__ = ["FORMATS", "READALONG_FORMATS", "SPLITS", "FormatInfo", "Loudness", "OutputSpec"]

#: Ways to split a book: one file per chapter, or parts of at most N hours.
SPLITS = ("chapters", "hours")

#: Formats a read-along EPUB can hold: the core media types of EPUB 3 audio
#: (AAC in MP4, MP3).
READALONG_FORMATS = ("m4b", "mp3")

#: The ffmpeg option that sets the language, by :attr:`FormatInfo.language`.
_LANGUAGE_OPTION = {"track": "-metadata:s:a:0", "global": "-metadata"}


@dataclass(frozen=True)
class FormatInfo:
    """How one output format is encoded and tagged: one row of :data:`FORMATS`.

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
    chapters : {"ffmetadata", "vorbis", None}
        How chapter marks are written: by ffmpeg from an FFMETADATA1 input,
        as ``CHAPTERxxx`` Vorbis comments by mutagen after ffmpeg, or not at
        all (the report lists them).
    cover : {"ffmpeg", "vorbis", None}
        How the cover is written: by ffmpeg as an attached picture, as a
        ``METADATA_BLOCK_PICTURE`` Vorbis comment by mutagen, or not at all.
    language : {"track", "global", None}
        Where the book's ISO 639-2 language goes: the audio track's language
        (``-metadata:s:a:0``), a ``language`` tag (``-metadata``), or nowhere.
    aac_coder : bool
        Whether the encoder takes ``-aac_coder`` (``merge.aac-coder``).
    muxer_args : tuple of str
        Muxer options of every pass (before ``-f``).
    final_args : tuple of str
        Muxer options of the finished file only (tag versions, brand...).
    cover_args : tuple of str
        Options added when ffmpeg attaches the cover (its stream's tags).
    """

    name: str
    ext: str
    muxer: str
    codec: tuple[str, ...]
    cache: bool
    chapters: str | None = "ffmetadata"
    cover: str | None = "ffmpeg"
    language: str | None = "global"
    aac_coder: bool = False
    muxer_args: tuple[str, ...] = ()
    final_args: tuple[str, ...] = ()
    cover_args: tuple[str, ...] = ()

    def __post_init__(self):
        for field, value, allowed in (
            ("chapters", self.chapters, ("ffmetadata", "vorbis", None)),
            ("cover", self.cover, ("ffmpeg", "vorbis", None)),
            ("language", self.language, (*_LANGUAGE_OPTION, None)),
        ):
            if value not in allowed:
                raise ValueError(f"format {self.name}: {field} must be one of {allowed}")

    @property
    def language_option(self) -> str | None:
        """The ffmpeg option that writes :attr:`language` (``-metadata:s:a:0``, ``-metadata``)."""
        return _LANGUAGE_OPTION.get(self.language)


#: The output formats, by ``--format`` value (the first is listed first in help and docs).
FORMATS: dict[str, FormatInfo] = {
    info.name: info
    for info in (
        FormatInfo(
            "m4b", ".m4b", "mp4", ("-c:a", "aac", "-b:a", "{bitrate}"), cache=True,
            language="track", aac_coder=True,
            final_args=("-brand", "M4B ", "-movflags", "+faststart"),
        ),
        FormatInfo(
            "mp3", ".mp3", "mp3", ("-c:a", "libmp3lame", "-b:a", "{bitrate}"), cache=True,
            final_args=("-id3v2_version", "3", "-write_id3v1", "1"),
            cover_args=("-metadata:s:v", "title=Album cover",
                        "-metadata:s:v", "comment=Cover (front)"),
        ),
        FormatInfo(
            "opus", ".opus", "ogg", ("-c:a", "libopus", "-b:a", "{bitrate}"), cache=True,
            chapters="vorbis", cover="vorbis",
        ),
        FormatInfo("flac", ".flac", "flac", ("-c:a", "flac"), cache=False, chapters="vorbis"),
        FormatInfo(
            "wav", ".wav", "wav", ("-c:a", "pcm_s16le"), cache=False,
            chapters=None, cover=None, language=None, muxer_args=("-rf64", "auto"),
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Loudness:
    """EBU R128 loudness normalisation targets of ffmpeg's ``loudnorm`` filter.

    The defaults are ``ebook2audio.output.loudness`` (:meth:`from_config`).

    Parameters
    ----------
    integrated : float
        Integrated loudness target in LUFS (``I``).
    true_peak : float
        Maximum true peak in dBTP (``TP``).
    lra : float
        Loudness range target in LU (``LRA``).
    """

    integrated: float
    true_peak: float
    lra: float

    @classmethod
    def from_config(cls) -> Loudness:
        """The targets in ``ebook2audio.output.loudness``: integrated, true-peak, range.

        Returns
        -------
        Loudness
            Read on the caller's side (the client, for a conversion).
        """
        from .. import config

        return cls(
            integrated=float(config.get("output.loudness.integrated")),
            true_peak=float(config.get("output.loudness.true-peak")),
            lra=float(config.get("output.loudness.range")),
        )

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
            chain += (
                f":measured_I={measured['input_i']}:measured_TP={measured['input_tp']}"
                f":measured_LRA={measured['input_lra']}:measured_thresh={measured['input_thresh']}"
                f":offset={measured['target_offset']}:linear=true"
            )
        return f"{chain},aresample={int(sample_rate)}"


@dataclass(frozen=True)
class OutputSpec:
    """What the merge writes: format, split, loudness and subtitles.

    Made on the client by :meth:`resolve` (arguments, else the
    ``ebook2audio.output`` config), then handed to the merge task.
    *bitrate* and *keep_encoded* left ``None`` are read from
    ``ebook2audio.merge.bitrate`` and ``merge.keep-encoded`` when the spec is
    made (on the client: a ``dask.config.set`` there reaches every worker).
    """

    format: str = "m4b"
    split: str | None = None  # None, "chapters" or "hours"
    split_hours: float | None = None
    loudnorm: Loudness | None = None
    subtitles: str | None = None  # None, "srt" or "vtt"
    #: Also write ``<stem>.readalong.epub``: the book's text with EPUB 3 Media Overlays
    #: timed from this audio (see :mod:`ebook2audio_dask.readalong`).
    readalong: bool = False
    bitrate: str | None = None  # None: merge.bitrate
    aac_coder: str | None = None
    #: Keep the encoded audio in the chunk store (None: ``merge.keep-encoded``).
    keep_encoded: bool | None = None

    def __post_init__(self) -> None:
        if self.bitrate is None or self.keep_encoded is None:
            from .. import config

            if self.bitrate is None:
                object.__setattr__(self, "bitrate", str(config.get("merge.bitrate")))
            if self.keep_encoded is None:
                object.__setattr__(self, "keep_encoded", bool(config.get("merge.keep-encoded")))

    @property
    def info(self) -> FormatInfo:
        """The format's row of :data:`FORMATS`."""
        return FORMATS[self.format]

    @classmethod
    def resolve(
        cls,
        format: str | None = None,
        split: str | None = None,
        split_hours: float | None = None,
        loudnorm: bool | None = None,
        subtitles: str | None = None,
        readalong: bool | None = None,
    ) -> OutputSpec:
        """The spec of the arguments, else of the config.

        Unset arguments are read from ``ebook2audio.output.*``; the bit rate,
        AAC coder and keep-encoded from ``merge.bitrate``, ``merge.aac-coder``
        and ``merge.keep-encoded``.

        Raises :class:`~ebook2audio_dask.errors.UsageError` for an unknown
        format, split or subtitle format, split hours that are not a
        positive number, or a read-along book with audio that EPUB readers
        cannot play (:data:`READALONG_FORMATS`).
        """
        from .. import config
        from ..errors import UsageError

        fmt = str(config.get("output.format", override=format)).lower().lstrip(".")
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        hours = config.get("output.split-hours", override=split_hours)
        how = config.get("output.split", override=split)
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
        subs = config.get("output.subtitles", override=subtitles)
        subs = None if subs in (None, "", "none", False) else str(subs).lower()
        if subs not in (None, *SUBTITLE_FORMATS):
            raise UsageError(
                f"unknown subtitle format {subs!r}; choose {' or '.join(SUBTITLE_FORMATS)}"
            )
        loud = Loudness.from_config() if config.get("output.loudnorm", override=loudnorm) else None
        along = bool(config.get("output.readalong", override=readalong))
        if along and fmt not in READALONG_FORMATS:
            raise UsageError(
                f"--readalong needs --format {' or '.join(READALONG_FORMATS)} (EPUB 3 readers "
                f"play only MP3 and AAC in MP4), not {fmt}"
            )
        return cls(
            format=fmt,
            split=how,
            split_hours=hours if how == "hours" else None,
            loudnorm=loud,
            subtitles=subs,
            readalong=along,
            aac_coder=config.get("merge.aac-coder") if FORMATS[fmt].aac_coder else None,
        )

    def codec_args(self) -> list[str]:
        """The encoder's ffmpeg options: the row's codec at this bit rate, and the AAC coder."""
        codec = [a.format(bitrate=self.bitrate) for a in self.info.codec]
        if self.aac_coder and self.info.aac_coder:
            codec += ["-aac_coder", str(self.aac_coder)]
        return codec

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
