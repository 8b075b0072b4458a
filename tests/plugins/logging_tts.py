"""A speech engine that logs every text it speaks, for the server's resume tests
(``tests/test_serve_queue.py``): how many chunks were synthesised, by which
processes, across a SIGKILL and a restart.

Read in the worker process:

``E2A_LOGGING_TTS_LOG=path``
    append one line per text spoken: ``<pid> <text as JSON>`` (one ``write``
    on a file opened for appending, so lines of several processes never mix);
``E2A_LOGGING_TTS_SLEEP=seconds``
    sleep that long per text (default 0.05), so a book takes a while.

It speaks 0.1 s of a tone per text, one text per call, and its chunks are at
most 200 characters (many chunks per chapter).  Registered as the engine
``logging-test`` by the ``logging_tts-1.0.dist-info`` next to this file (on
``sys.path`` in pytest, on ``PYTHONPATH`` for the server processes).
"""

from __future__ import annotations

import json
import os
import time
from typing import ClassVar

import numpy as np

from ebook2audio_dask.engines import Engine, VoiceInfo

#: Environment variables read in the worker process.
LOG_ENV = "E2A_LOGGING_TTS_LOG"
SLEEP_ENV = "E2A_LOGGING_TTS_SLEEP"


def logged_texts(path) -> list[tuple[int, str]]:
    """``(pid, text)`` of every text the engines logged in *path* (repeats included)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        pid, _, text = line.partition(" ")
        out.append((int(pid), json.loads(text)))
    return out


class LoggingEngine(Engine):
    """0.1 s of a tone per text; logs each text to ``$E2A_LOGGING_TTS_LOG``."""

    name: ClassVar[str] = "logging-test"
    max_chars: ClassVar[int] = 200
    batch_size = 1  # each chunk reaches the store as soon as it is spoken

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
        pause = float(os.environ.get(SLEEP_ENV, "0.05"))
        log = os.environ.get(LOG_ENV)
        out = []
        for text in texts:
            time.sleep(pause)
            if log:
                line = f"{os.getpid()} {json.dumps(text)}\n".encode()
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            t = np.arange(self.sample_rate // 10) / self.sample_rate
            out.append((3000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
        return out
