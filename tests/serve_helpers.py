"""A real ``ebook2audio serve`` process for the server's tests (started and stopped by them).

:class:`ServerProcess` runs ``python -m ebook2audio_dask serve`` on a free loopback
port with its own ``--data`` folder, in a new session (a SIGKILL goes to that
session; the embedded cluster's workers, in sessions of their own, exit when
their parent dies), with ``tests/plugins`` on
``PYTHONPATH`` so the test engines (``fake``, ``faulty``...) are there as plugins.
Its output goes to ``<data>/server.log``, shown when it fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``ebook2audio serve`` in a subprocess.

    Parameters
    ----------
    data : Path
        The server's ``--data`` folder (kept across :meth:`restart`).
    *args : str
        More command-line arguments (``--n-workers 1``, ``--scheduler ADDR``...).
    token : str, optional
        Written to ``<data>/../token`` and passed as ``--token-file``.
    env : dict, optional
        More environment variables.
    port : int, optional
        Port to bind (default: a free one, kept across restarts).
    host : str
        Address to bind (``--host``).
    """

    def __init__(self, data, *args: str, token: str | None = None, env=None, port=None,
                 host: str = "127.0.0.1"):  # fmt: skip
        self.data = Path(data)
        self.args = list(args)
        self.token = token
        self.env = dict(env or {})
        self.port = port or free_port()
        self.host = host
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data.parent / f"{self.data.name}-server.log"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header when a token is set."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs) -> httpx.Client:
        """An httpx client for this server (token header set)."""
        kwargs.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, headers=self.headers, **kwargs)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "ebook2audio_dask", "serve", "--host", self.host,
               "--port", str(self.port), "--data", str(self.data)]  # fmt: skip
        if self.token:
            token_file = self.data.parent / f"{self.data.name}.token"
            token_file.write_text(self.token + "\n")
            cmd += ["--token-file", str(token_file)]
        return cmd + self.args

    def start(self, timeout: float = 180) -> ServerProcess:
        """Start the server and wait until ``GET /healthz`` answers 200."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PLUGINS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env.update(self.env)
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it open
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(ROOT), start_new_session=True)  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ebook2audio serve exited {self.proc.returncode}:\n{self.log()}"
                )
            try:
                r = httpx.get(self.url + "/healthz", headers=self.headers, timeout=5)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"ebook2audio serve did not answer in {timeout} s:\n{self.log()}"
                )
            time.sleep(0.3)

    def log(self) -> str:
        """The server's output so far (its last 6,000 characters)."""
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (a clean shutdown), then SIGKILL of its whole session after *timeout*."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self._kill_group()

    def kill(self) -> None:
        """SIGKILL the server and its session (its workers then exit by themselves)."""
        if self.proc is None:
            return
        self._kill_group()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def restart(self, timeout: float = 180) -> ServerProcess:
        """Start again with the same data folder, port and arguments."""
        return self.start(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
