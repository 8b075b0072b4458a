"""Running ffmpeg: where the binary is, the common arguments, errors and decoding.

Every ffmpeg process of the audio stage is started with the helpers here:
:func:`ffmpeg_exe` finds the binary, :data:`FFMPEG_HEAD` starts an encoder's
command line, :func:`run_ffmpeg` runs a short command and captures its
output (:func:`stderr_lines` reads its message), :func:`stderr_tail` quotes
the end of what a long-running one wrote to its stderr file in an error
message, and :func:`decode_to_pcm` reads any audio file back as samples (for
tests and checks).  The command lines of the output formats are built in
:mod:`~ebook2audio_dask.audio.formats`.

ffmpeg comes from :mod:`imageio_ffmpeg` (a static build, no ffprobe); set the
``IMAGEIO_FFMPEG_EXE`` environment variable to use another binary.
"""

from __future__ import annotations

import functools
import os
import subprocess

import numpy as np

__all__ = [
    "FFMPEG_HEAD",
    "decode_to_pcm",
    "ffmpeg_exe",
    "run_ffmpeg",
    "stderr_lines",
    "stderr_tail",
]

#: How much of ffmpeg's stderr is quoted in an error message.
_STDERR_TAIL_BYTES = 4096

#: First arguments of an encoder's command line (after the binary): no banner,
#: no progress, no reading from the terminal, errors only, overwrite the output.
FFMPEG_HEAD = ("-hide_banner", "-nostats", "-nostdin", "-loglevel", "error", "-y")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg executable.

    The binary bundled with :mod:`imageio_ffmpeg` is used, or the one named by
    the ``IMAGEIO_FFMPEG_EXE`` environment variable.  The answer is cached.

    Returns
    -------
    str
        Absolute path of ffmpeg.

    Raises
    ------
    RuntimeError
        If imageio-ffmpeg is not installed or cannot find a binary.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RuntimeError(
            "ffmpeg is needed to write M4B files: install the imageio-ffmpeg package"
        ) from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # noqa: BLE001  (imageio-ffmpeg raises RuntimeError or OSError)
        raise RuntimeError(
            f"ffmpeg is needed to write M4B files but none was found ({exc}); "
            "reinstall imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE to an ffmpeg binary"
        ) from None


def stderr_tail(fileobj, max_lines: int = 5) -> str:
    """Return the last non-empty lines of a file ffmpeg wrote its stderr to.

    Parameters
    ----------
    fileobj : binary file
        The (temporary) file given to ffmpeg as its stderr; only its last
        4 KiB are read.
    max_lines : int
        How many lines to keep.

    Returns
    -------
    str
        The lines joined with ``" | "``, or ``"no message"``.
    """
    fileobj.flush()
    size = fileobj.seek(0, os.SEEK_END)
    fileobj.seek(max(0, size - _STDERR_TAIL_BYTES))
    text = fileobj.read().decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines[-max_lines:]) or "no message"


def run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    """Run a short ffmpeg command, capturing its output.

    Parameters
    ----------
    args : list of str
        The arguments after ``ffmpeg -hide_banner -nostdin -loglevel error``.

    Returns
    -------
    subprocess.CompletedProcess
        With ``stdout`` and ``stderr`` as bytes; ffmpeg's exit status is not
        checked (see :func:`stderr_lines` for its message).
    """
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )


def stderr_lines(stderr: bytes) -> list[str]:
    """Return the lines of what a finished ffmpeg wrote to its (captured) stderr.

    Parameters
    ----------
    stderr : bytes
        ``CompletedProcess.stderr``.

    Returns
    -------
    list of str
        Its lines, blank ends stripped (empty when ffmpeg said nothing).
    """
    return stderr.decode("utf-8", "replace").strip().splitlines()


def decode_to_pcm(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode an audio file to mono int16 samples with ffmpeg.

    Meant for tests and checks: the whole file is decoded into memory.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file (any format ffmpeg reads).
    sample_rate : int
        Rate to resample to.

    Returns
    -------
    numpy.ndarray
        The first audio stream, downmixed to mono, as ``int16`` samples.

    Raises
    ------
    RuntimeError
        If ffmpeg cannot decode the file.
    """
    result = run_ffmpeg(
        ["-i", str(path), "-map", "0:a:0", "-f", "s16le", "-acodec", "pcm_s16le",
         "-ac", "1", "-ar", str(int(sample_rate)), "pipe:1"]
    )  # fmt: skip
    if result.returncode != 0:
        lines = stderr_lines(result.stderr)
        raise RuntimeError(
            f"ffmpeg cannot decode {path}: {lines[-1] if lines else result.returncode}"
        )
    return np.frombuffer(result.stdout, dtype="<i2").astype(np.int16)
