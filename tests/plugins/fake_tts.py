"""A scripted speech engine for the unit tests of the synthesize task (tests/test_deadletter.py).

It speaks one second of a tone per text and raises for the texts it is told
to: the script (:meth:`FakeEngine.configure`) is read when an engine is made,
so a test configures it, then has :func:`ebook2audio_dask.engines.load_engine`
make a fresh one (after :func:`~ebook2audio_dask.engines.unload_engines`).
Registered as the engine ``fake`` by the ``fake_tts-1.0.dist-info`` next to
this file, exactly as a third-party engine plugs in; pytest puts this folder on
``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ebook2audio_dask.engines import Engine, VoiceInfo


class FakeEngine(Engine):
    """Returns one second of a tone per text; raises for texts in *bad* (forever) or *flaky* (n
    times)."""

    name: ClassVar[str] = "fake"
    #: What the next engine made does (see :meth:`configure`).
    script: ClassVar[dict] = {}

    @classmethod
    def configure(
        cls, batch_size: int = 4, bad=(), flaky: dict | None = None, unavailable: str = ""
    ) -> None:
        """Script the engines made from now on.

        Parameters
        ----------
        batch_size : int
            Texts per ``synthesize`` call.
        bad : iterable of str
            Texts that always raise ``RuntimeError``.
        flaky : dict
            ``{text: n}``: the text raises ``ConnectionError`` its first *n* times.
        unavailable : str
            Non-empty: the engine is not available, for that reason.
        """
        cls.script = {"batch_size": batch_size, "bad": set(bad), "flaky": dict(flaky or {}),
                      "unavailable": unavailable}  # fmt: skip

    @classmethod
    def availability(cls):
        why = cls.script.get("unavailable", "")
        return (False, why) if why else (True, "")

    @classmethod
    def voices(cls, model=None):
        return [VoiceInfo("v", "en")]

    @classmethod
    def sample_rate_for(cls, voice, model=None):
        return 8000

    def __init__(self, voice, settings=None, threads: int = 1):
        super().__init__(voice, settings, threads=threads)
        script = type(self).script
        self.batch_size = script.get("batch_size", 4)
        self.bad = set(script.get("bad", ()))
        self.flaky = dict(script.get("flaky", {}))
        #: The texts of each synthesize call, in order.
        self.calls: list[list[str]] = []

    @property
    def sample_rate(self) -> int:
        return 8000

    def synthesize(self, texts, seeds=None):
        self.calls.append(list(texts))
        for t in texts:
            if t in self.bad:
                raise RuntimeError(f"cannot say {t}\nsecond line")
            if self.flaky.get(t, 0) > 0:
                self.flaky[t] -= 1
                raise ConnectionError("try again")
        return [np.full(self.sample_rate, 1000, dtype=np.int16) for _ in texts]
