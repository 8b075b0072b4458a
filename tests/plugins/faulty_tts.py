"""A speech engine that fails on purpose, for the fault-injection tests only.

It is espeak-ng (real audio), except for texts that contain a trigger word
given in environment variables, read in the worker process:

``E2A_FAULTY_FAIL=word``
    raise ``RuntimeError`` every time (a chunk the engine cannot speak);
``E2A_FAULTY_FLAKY=word``
    raise the first ``E2A_FAULTY_FLAKY_TIMES`` (default 2) times each such
    text is spoken in this process, then speak it (a transient fault);
``E2A_FAULTY_KILL=word``
    SIGKILL its own process (a native crash, the kernel's OOM killer).

It is registered as the engine ``faulty`` by the ``faulty_tts-1.0.dist-info``
next to it, when this folder is on ``PYTHONPATH``: exactly how a third-party
engine plugs in.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import ClassVar

from ebook2audio_dask.engines.espeak import EspeakEngine

#: Times each text was tried in this process (for E2A_FAULTY_FLAKY).
TRIES: Counter[str] = Counter()


def _has(variable: str, text: str) -> bool:
    word = os.environ.get(variable)
    return bool(word) and word in text


class FaultyEngine(EspeakEngine):
    name: ClassVar[str] = "faulty"
    batch_size = 4  # several texts per engine call, so a failing call is split up

    def synthesize(self, texts, seeds=None):
        for text in texts:
            if _has("E2A_FAULTY_KILL", text):
                os.kill(os.getpid(), signal.SIGKILL)
            if _has("E2A_FAULTY_FAIL", text):
                raise RuntimeError(f"cannot speak {text[:20]!r}")
            if _has("E2A_FAULTY_FLAKY", text):
                TRIES[text] += 1
                if TRIES[text] <= int(os.environ.get("E2A_FAULTY_FLAKY_TIMES", "2")):
                    raise ConnectionError(f"flaky engine, try {TRIES[text]}")
        return super().synthesize(texts, seeds)
