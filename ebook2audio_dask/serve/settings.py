"""The server's settings: :class:`ServeSettings`, read from ``ebook2audio.serve``.

``ebook2audio serve`` builds one from its flags (each flag wins over its
config key); tests and embedders call :meth:`ServeSettings.from_config` with
keyword overrides.  Nothing here starts anything.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes

from .. import config
from ..errors import UsageError

__all__ = ["MIN_TOKEN_CHARS", "TOKEN_ENV", "ServeSettings", "is_loopback", "read_token"]

#: Environment variable holding the API token (wins over ``ebook2audio.serve.token``).
TOKEN_ENV = "EBOOK2AUDIO_TOKEN"

#: Shortest API token accepted.  Wrong tokens are not rate-limited (behind a reverse proxy
#: every client has the proxy's address, so a limit per address would lock everyone out):
#: what keeps a token from being guessed is its length.
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True when *host* (a bind address or name) only accepts this machine's connections."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None = None) -> str | None:
    """The API token: *token_file*'s first line, else ``$EBOOK2AUDIO_TOKEN``, else the config.

    Raises
    ------
    UsageError
        The token file cannot be read or is empty.
    """
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"{token_file}: cannot read the token file ({exc.strerror})") from None
        if not token:
            raise UsageError(f"{token_file}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or config.get("serve.token") or None


@dataclass
class ServeSettings:
    """What one ``ebook2audio serve`` process does.

    Parameters
    ----------
    data : Path
        The server's folder: ``queue.sqlite3`` (the job queue), ``uploads/``,
        and by default ``outputs/`` and ``chunks/`` (the chunk store).
    output : str
        Where audiobooks go (path or fsspec URL), one folder per job.
    cache : str
        Chunk store URL the server's jobs use.
    host, port : str, int
        Address to bind.
    token : str or None
        API token; required when *host* is not loopback.
    allowed_hosts : list of str
        Host header values accepted besides loopback names and *host*.
    max_upload_size : int
        Largest upload in bytes.
    max_pending_uploads, max_books_per_job, jobs_in_flight : int
        Limits of the queue (``ebook2audio.serve.*``).
    reconnect_interval : float
        Seconds between attempts to reach a scheduler that went away.
    preview_chars, speech_max_chars : int
        Voice preview length and the longest ``/v1/audio/speech`` input.
    cluster : dict
        :class:`~ebook2audio_dask.pipeline.options.RunOptions` keywords
        (``scheduler``, ``slurm``, ``adapt``, ``n_workers``, ``gpus``,
        ``cluster``...) for the cluster the server holds.
    engine_threads : int or None
        CPU threads per engine of embedded workers.
    storage_options : dict or None
        fsspec options for the output and chunk store URLs.
    """

    data: Path
    output: str
    cache: str
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    max_upload_size: int = 200 * 2**20
    max_pending_uploads: int = 200
    max_books_per_job: int = 100
    jobs_in_flight: int = 2
    reconnect_interval: float = 5.0
    preview_chars: int = 200
    speech_max_chars: int = 100_000
    cluster: dict[str, Any] = field(default_factory=dict)
    engine_threads: int | None = None
    storage_options: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, **overrides: Any) -> ServeSettings:
        """Settings from ``ebook2audio.serve`` (and ``ebook2audio.cache``), *overrides* winning.

        *overrides* are this class's fields; a ``None`` value means "from the
        config".  ``token_file`` is also accepted (see :func:`read_token`).
        ``output`` defaults to ``<data>/outputs``; ``cache`` to
        ``<data>/chunks`` while ``ebook2audio.cache`` is at its shipped default,
        else to that setting.

        Raises
        ------
        UsageError
            A bad size, or a host beyond loopback with no token.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        token_file = given.pop("token_file", None)
        data = Path(given.pop("data", None) or config.get("serve.data")).expanduser().resolve()
        output = given.pop("output", None) or config.get("serve.output") or str(data / "outputs")
        cache = given.pop("cache", None)
        if cache is None:
            configured = config.get("cache")
            shipped = config.defaults()["cache"]
            cache = str(data / "chunks") if configured == shipped else configured
        size = given.pop("max_upload_size", None) or config.get("serve.max-upload-size")
        try:
            size = parse_bytes(size) if isinstance(size, str) else int(size)
        except (TypeError, ValueError):
            raise UsageError(f"ebook2audio.serve.max-upload-size: not a size: {size!r}") from None
        token = given.pop("token", None) or read_token(token_file)
        settings = cls(
            data=data,
            output=str(output),
            cache=str(cache),
            host=given.pop("host", None) or config.get("serve.host"),
            port=int(given.pop("port", config.get("serve.port"))),  # 0: any free port
            token=token,
            allowed_hosts=list(
                given.pop("allowed_hosts", None) or config.get("serve.allowed-hosts")
            ),
            max_upload_size=size,
            max_pending_uploads=int(config.get("serve.max-pending-uploads")),
            max_books_per_job=int(config.get("serve.max-books-per-job")),
            jobs_in_flight=int(config.get("serve.jobs-in-flight")),
            reconnect_interval=float(config.get("serve.reconnect-interval")),
            preview_chars=int(config.get("serve.preview-chars")),
            speech_max_chars=int(config.get("serve.speech-max-chars")),
        )
        for name, value in given.items():  # the rest: plain fields (limits, cluster...)
            if not hasattr(settings, name):
                raise TypeError(f"ServeSettings has no setting {name!r}")
            setattr(settings, name, value)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse what would be unsafe: beyond loopback with no token, a short token.

        Raises
        ------
        UsageError
            *host* is not loopback and no token is set, or the token is shorter
            than :data:`MIN_TOKEN_CHARS`.
        """
        if self.token and len(self.token) < MIN_TOKEN_CHARS:
            raise UsageError(
                f"the API token is {len(self.token)} characters long: use at least "
                f'{MIN_TOKEN_CHARS} random ones, e.g. python -c "import secrets; '
                'print(secrets.token_urlsafe(32))"'
            )
        if not is_loopback(self.host) and not self.token:
            raise UsageError(
                f"--host {self.host} accepts connections from other machines: an API token "
                f"is required (--token-file, ${TOKEN_ENV} or ebook2audio.serve.token)"
            )

    @property
    def needs_token(self) -> bool:
        """True when requests must carry the token (it is set, whatever the host)."""
        return bool(self.token)

    @property
    def queue_path(self) -> Path:
        """The SQLite job queue."""
        return self.data / "queue.sqlite3"

    @property
    def uploads_dir(self) -> Path:
        """Where uploads are stored, under generated names."""
        return self.data / "uploads"

    def job_output(self, job_id: str) -> str:
        """The output folder of job *job_id* (``<output>/<job_id>``)."""
        return f"{self.output.rstrip('/')}/{job_id}"

    def __repr__(self) -> str:  # never shows the token
        shown = "set" if self.token else "none"
        return (
            f"ServeSettings(data={str(self.data)!r}, host={self.host!r}, port={self.port}, "
            f"token={shown})"
        )
