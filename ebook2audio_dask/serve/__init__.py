"""``ebook2audio serve``: a web page, a REST API and an OpenAI-compatible speech endpoint
in front of the cluster, with a job queue (SQLite) that survives restarts.

Needs the ``serve`` extra (``pip install "ebook2audio_dask[serve]"``: FastAPI, uvicorn,
httpx).  See ``docs/serve.md``.

Modules
-------
settings
    :class:`ServeSettings`, from ``ebook2audio.serve`` and the command line.
store
    :class:`JobStore`: uploads, jobs, their books, state and progress in SQLite.
runner
    :class:`Runner`: holds the Dask client and drives queued jobs through the pipeline.
app
    :func:`create_app`: the FastAPI application (page, REST API, events, downloads).
security
    Token, session cookie, CSRF and Host checks, security headers.
speech
    ``POST /v1/audio/speech`` and the voice preview: text spoken across the cluster.
client
    :class:`ServerClient`: the Python client ``ebook2audio submit`` uses.
"""

from __future__ import annotations

from .settings import ServeSettings, is_loopback, read_token

__all__ = ["ServeSettings", "is_loopback", "read_token"]
