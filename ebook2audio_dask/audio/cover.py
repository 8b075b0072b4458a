"""Cover preparation: the book's cover image as a JPEG or PNG file ffmpeg can attach.

:func:`prepare_cover` recognises the image by its content (not its declared
type): JPEG and PNG are kept as they are once ffmpeg has decoded them; GIF,
WebP, BMP and TIFF are converted to PNG; an SVG (or gzipped ``.svgz``)
contributes its largest embedded raster image.  A cover that cannot be used
is left out with a logged warning; it never fails the book.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from pathlib import Path

from ..logs import get_logger
from .ffmpeg import run_ffmpeg, stderr_lines

__all__ = ["prepare_cover"]

log = get_logger(__name__)

#: Decompressed size limit for a gzip-compressed (``.svgz``) cover.
_MAX_SVG_BYTES = 64 * 1024 * 1024

_RASTER_MAGIC = (
    # (prefix, offset, format)
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),  # after b"RIFF" + size
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
)

_DATA_URI = re.compile(rb"data:image/[a-zA-Z0-9.+-]*\s*;\s*base64\s*,([^\"'<>()]+)")
_XML_CHAR_REF = re.compile(rb"&#(?:x[0-9a-fA-F]+|[0-9]+);")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")  # padding is stripped, then restored


def _raster_format(data: bytes) -> str | None:
    """Recognise a raster image by its magic bytes."""
    for prefix, offset, fmt in _RASTER_MAGIC:
        if data[offset : offset + len(prefix)] == prefix:
            if fmt == "webp" and data[:4] != b"RIFF":
                continue
            return fmt
    return None


def _svg_text(data: bytes, media_type: str | None) -> bytes | None:
    """Return the SVG document in *data* (gunzipping ``.svgz``), or None."""
    if data[:2] == b"\x1f\x8b":
        if media_type != "image/svg+xml":
            return None
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(data, _MAX_SVG_BYTES)
        except zlib.error:
            return None
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if media_type == "image/svg+xml" or (head.startswith(b"<") and b"<svg" in head):
        return data if b"<svg" in data[:65536].lower() else None
    return None


def _svg_rasters(svg: bytes) -> list[bytes]:
    """Decode the base64 ``data:image/...`` URIs embedded in an SVG, largest first."""
    found = []
    for match in _DATA_URI.finditer(svg):
        payload = _NOT_BASE64.sub(b"", _XML_CHAR_REF.sub(b"", match.group(1)))
        if len(payload) % 4 == 1:  # cannot be valid: drop the stray character
            payload = payload[:-1]
        payload += b"=" * (-len(payload) % 4)
        try:
            image = base64.b64decode(payload)
        except (binascii.Error, ValueError):
            continue
        if image:
            found.append(image)
    return sorted(found, key=len, reverse=True)


def prepare_cover(cover: bytes, media_type: str | None, workdir: Path) -> Path | None:
    """Turn the book's cover into a JPEG or PNG file ffmpeg can attach.

    JPEG and PNG are kept as they are (after checking that ffmpeg can decode
    them); GIF, WebP, BMP and TIFF are converted to PNG; an SVG contributes
    its largest embedded raster image.  Anything else gives ``None``.

    Parameters
    ----------
    cover : bytes
        The image as the book holds it.
    media_type : str or None
        Its declared MIME type; only needed to recognise a gzipped SVG.
    workdir : pathlib.Path
        Folder the prepared file is written to.

    Returns
    -------
    pathlib.Path or None
        ``cover-in.jpeg``/``cover-in.png`` or ``cover.png`` in *workdir*, or
        None (with a warning) when the cover cannot be used.
    """
    fmt = _raster_format(cover)
    if fmt is None:
        svg = _svg_text(cover, media_type)
        if svg is None:
            log.warning(
                "cover (%s, %d bytes) is not a recognised image; writing the "
                "audiobook without a cover",
                media_type or "unknown type",
                len(cover),
            )
            return None
        for image in _svg_rasters(svg):
            if _raster_format(image) is not None:
                path = prepare_cover(image, None, workdir)
                if path is not None:
                    return path
        log.warning(
            "SVG cover holds no usable embedded raster image; writing the audiobook without a cover"
        )
        return None

    source = workdir / f"cover-in.{fmt}"
    source.write_bytes(cover)
    demuxer = ["-f", f"{fmt}_pipe", "-i", str(source)]
    if fmt in ("jpeg", "png"):
        result = run_ffmpeg([*demuxer, "-frames:v", "1", "-f", "null", "-"])
        if result.returncode == 0:
            return source
    else:
        target = workdir / "cover.png"
        result = run_ffmpeg(
            [
                *demuxer,
                "-frames:v",
                "1",
                "-c:v",
                "png",
                "-update",
                "1",
                "-f",
                "image2",
                "-y",
                str(target),
            ]
        )
        if result.returncode == 0 and target.exists() and target.stat().st_size:
            return target
    message = stderr_lines(result.stderr)
    log.warning(
        "cover image (%s) cannot be decoded (%s); writing the audiobook without a cover",
        fmt,
        message[-1] if message else f"ffmpeg exit status {result.returncode}",
    )
    return None
