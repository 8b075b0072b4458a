"""Two engines that count the threads inside their ``synthesize`` at once, for the tests of
:func:`ebook2audio_dask.engines.load_engine`'s serialisation (``tests/test_slots.py``).

``unsafe-test`` does not declare itself thread-safe (``load_engine`` makes its
calls take turns), ``safe-test`` does.  They are registered by the
``counting_tts-1.0.dist-info`` next to this file, exactly as a third-party
engine plugs in; pytest puts this folder on ``sys.path`` (``pythonpath`` in
``pyproject.toml``).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ebook2audio_dask.engines import Engine, VoiceInfo


class Counting(Engine):
    """An engine that sleeps in synthesize and counts the threads inside it at once."""

    name = "counting-test"
    #: Threads inside synthesize now, and the most there were at once (reset by the test).
    active = 0
    most = 0
    guard = threading.Lock()

    @classmethod
    def availability(cls):
        return True, ""

    @classmethod
    def voices(cls, model=None):
        return [VoiceInfo("v", "en")]

    @classmethod
    def sample_rate_for(cls, voice, model=None):
        return 16000

    @property
    def sample_rate(self) -> int:
        return 16000

    def synthesize(self, texts, seeds=None):
        cls = type(self)
        with cls.guard:
            cls.active += 1
            cls.most = max(cls.most, cls.active)
        time.sleep(0.2)
        with cls.guard:
            cls.active -= 1
        return [np.zeros(10, dtype=np.int16) for _ in texts]


class Unsafe(Counting):
    name = "unsafe-test"


class Safe(Counting):
    name = "safe-test"
    thread_safe = True
