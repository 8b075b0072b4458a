"""A real S3 server for the tests: moto's server as a separate process, and a fault-injecting proxy.

``moto_server`` runs as its own OS process on 127.0.0.1, so the Dask worker
processes reach it over HTTP exactly as they would reach S3.
:class:`FaultProxy` sits in front of it and answers chosen requests with
``503 SlowDown`` (what S3 says when throttling) or ``500 InternalError`` for
a while, to check that transient errors are survived.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import urlopen

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # else botocore probes an address off this machine
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on 127.0.0.1; yield its endpoint URL; stop it."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from moto.server import main; main()",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, **CREDENTIALS),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urlopen(url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault</RequestId></Error>"
)


class FaultProxy:
    """An HTTP proxy to *target* that fails matching requests on demand.

    Parameters
    ----------
    target : str
        ``http://host:port`` of the real server.
    """

    def __init__(self, target: str):
        self.target = target.removeprefix("http://")
        self.failures_left = 0
        self.until = 0.0
        self.match = ""
        self.methods: tuple[str, ...] = ()
        self.status, self.code = 503, "SlowDown"
        self.failed = 0
        self.forwarded = 0
        #: ``(method, path)`` of every request received, in order.
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                if proxy._should_fail(self.command, self.path):
                    payload = _ERROR.format(code=proxy.code, message="injected fault").encode()
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    # A HEAD answer has no body (as S3's own): bytes after it would be read as
                    # the start of the next response on this keep-alive connection.
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.target
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer has no body but announces the object's size: keep it
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()
                with proxy._lock:
                    proxy.forwarded += 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _should_fail(self, method: str, path: str) -> bool:
        with self._lock:
            if (self.methods and method not in self.methods) or self.match not in path:
                return False
            if self.failures_left > 0 or time.monotonic() < self.until:
                self.failures_left = max(0, self.failures_left - 1)
                self.failed += 1
                return True
            return False

    def fail(
        self,
        *,
        count: int = 0,
        seconds: float = 0.0,
        match: str = "",
        methods=("GET", "PUT", "HEAD"),
        status: int = 503,
        code: str = "SlowDown",
    ) -> None:
        """Fail the next *count* matching requests and/or all of them for *seconds*."""
        with self._lock:
            self.failures_left, self.until = count, time.monotonic() + seconds
            self.match, self.methods, self.status, self.code = match, tuple(methods), status, code

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
