"""Synthetic speech engines for the benchmarks: what is measured is the pipeline, not speech.

``bench-noop`` (:class:`NoopEngine`) returns 80 samples of silence per text
at once; ``sleep`` (:class:`SleepEngine`) first waits a fixed time per
character (``time.sleep`` releases the GIL, as a GPU engine waiting on CUDA
does).  Both are registered by the ``bench_engines-1.0.dist-info`` next to
this file, exactly as a third-party engine plugs in: any process with this
folder on ``sys.path`` knows them (a script run from it, and the worker
processes it spawns; ``PYTHONPATH`` for others).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ebook2audio_dask.engines import Engine, VoiceInfo


class NoopEngine(Engine):
    """Returns 80 samples of silence per text at once: the pipeline is all that costs."""

    name = "bench-noop"
    max_chars = 400
    #: The id of the one voice.
    voice_id = "noop"

    @classmethod
    def availability(cls):
        return True, ""

    @classmethod
    def voices(cls, model=None):
        return [VoiceInfo(cls.voice_id, "en", "synthetic")]

    @classmethod
    def sample_rate_for(cls, voice, model=None):
        return 8000

    @property
    def sample_rate(self):
        return 8000

    def synthesize(self, texts: Sequence[str], seeds=None):
        return [np.zeros(80, dtype=np.int16) for _ in texts]


class SleepEngine(NoopEngine):
    """Waits :attr:`per_char` seconds per character, then speaks 80 samples of silence."""

    name = "sleep"
    voice_id = "sleep"
    #: Seconds waited per character (``bench_scaleout.py --per-char-ms`` sets it).
    per_char = 0.005

    def synthesize(self, texts: Sequence[str], seeds=None):
        for text in texts:
            time.sleep(len(text) * self.per_char)
        return super().synthesize(texts, seeds)
