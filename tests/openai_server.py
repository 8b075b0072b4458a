"""A real OpenAI-compatible speech server for the tests, run as its own process.

``POST /v1/audio/speech`` answers ``{"model", "input", "voice",
"response_format": "wav" | "pcm", "speed"}`` with real speech from espeak-ng
(:class:`ebook2audio_dask.engines.espeak.EspeakEngine`), resampled to the
server's rate (24000 Hz, OpenAI's, unless ``--rate``).  When started with a key
(``$OPENAI_TEST_SERVER_KEY``) it wants ``Authorization: Bearer <key>`` and, as
a careless server might, echoes what it got in its 401 answer.

Faults are injected through ``POST /control`` (JSON):

``{"faults": ["429:2", "500", ...]}``
    one fault per coming speech request, in order: ``429[:seconds]`` (with
    ``Retry-After``), ``500``, ``503``, ``400`` (a bad request), ``slow:S``
    (answer after S seconds), ``truncate`` (the connection drops halfway
    through the body), ``cut-wav`` (a whole body whose WAV header announces
    more audio than it holds), ``empty`` (200 with no body), ``rate:R``
    (audio at R Hz).
``{"always": "rate:16000"}``
    a fault for every request (``null`` to stop).

``GET /log`` lists every speech request: time, voice, model, characters, a
digest of the text, the answer's status, the fault, whether the key matched,
and how many requests were in flight when it arrived.  Nothing of the key
is logged.

:class:`SpeechServer` starts the process on 127.0.0.1 on a free port and
talks to it; ``python tests/openai_server.py --port 8880`` runs one by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import Request, urlopen

import numpy as np

KEY_VARIABLE = "OPENAI_TEST_SERVER_KEY"


class _State:
    """What the server's threads share."""

    def __init__(self, rate: int, key: str | None, latency: float):
        self.rate = rate
        self.key = key
        self.latency = latency
        self.lock = threading.Lock()
        self.faults: list[str] = []
        self.always: str | None = None
        self.log: list[dict] = []
        self.inflight = 0
        self._engine = None

    def engine(self):
        with self.lock:
            if self._engine is None:
                from ebook2audio_dask.engines.espeak import EspeakEngine

                self._engine = EspeakEngine("en-us")
            return self._engine

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else self.always


def speak(state: _State, text: str, speed: float, rate: int) -> np.ndarray:
    """espeak-ng's speech of *text* at *rate* Hz (int16)."""
    from ebook2audio_dask.engines.espeak import EspeakEngine

    engine = state.engine()
    if speed != 1.0:
        engine = EspeakEngine("en-us", {"rate": max(80, min(450, round(175 * speed)))})
    [pcm] = engine.synthesize([text])
    if rate != engine.sample_rate and len(pcm):
        n = int(round(len(pcm) * rate / engine.sample_rate))
        pcm = np.interp(np.linspace(0, len(pcm) - 1, n), np.arange(len(pcm)), pcm).astype(np.int16)
    return pcm


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    from ebook2audio_dask.audio.wav import encode_wav

    return encode_wav(pcm, rate)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    state: _State

    def log_message(self, format, *args) -> None:
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", headers=None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers=None) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        self._send(status, body, headers=headers)

    def do_GET(self) -> None:
        if self.path == "/log":
            with self.state.lock:
                body = json.dumps(self.state.log).encode()
            self._send(200, body)
        elif self.path == "/health":
            self._send(200, b"{}")
        else:
            self._error(404, f"no such path {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/control":
            data = json.loads(raw or b"{}")
            with self.state.lock:
                if "faults" in data:
                    self.state.faults = list(data["faults"])
                if "always" in data:
                    self.state.always = data["always"]
                if data.get("clear_log"):
                    self.state.log.clear()
            self._send(200, b"{}")
            return
        if not self.path.rstrip("/").endswith("/v1/audio/speech"):
            self._error(404, f"no such path {self.path}")
            return
        with self.state.lock:
            self.state.inflight += 1
            inflight = self.state.inflight
        try:
            self._speech(raw, inflight)
        finally:
            with self.state.lock:
                self.state.inflight -= 1

    def _speech(self, raw: bytes, inflight: int) -> None:
        state = self.state
        entry: dict = {
            "t": time.time(),
            "inflight": inflight,
            "port": self.server.server_address[1],
        }
        given = self.headers.get("Authorization") or ""
        matches = given == f"Bearer {state.key}"
        entry["auth"] = "none" if state.key is None else ("ok" if matches else "refused")
        try:
            request = json.loads(raw)
            text, voice, model = request["input"], request["voice"], request["model"]
        except (ValueError, KeyError, TypeError):
            entry.update(status=400, fault=None)
            self._log(entry)
            self._error(400, "input, voice and model are required")
            return
        fmt = request.get("response_format", "mp3")
        entry.update(voice=voice, model=model, chars=len(text), format=fmt, fields=sorted(request),
                     text=hashlib.sha256(text.encode()).hexdigest()[:16])  # fmt: skip
        if entry["auth"] == "refused":
            entry.update(status=401, fault=None)
            self._log(entry)
            self._error(401, f"Incorrect API key provided: {given.removeprefix('Bearer ')}.")
            return
        fault = state.next_fault()
        entry.update(fault=fault, status=None)
        self._log(entry)  # now: a slow answer shows as soon as it is asked (its status when made)
        kind, _, arg = (fault or "").partition(":")
        if state.latency:
            time.sleep(state.latency)
        if kind in ("429", "500", "503", "400"):
            entry["status"] = int(kind)
            headers = {"Retry-After": arg or "1"} if kind == "429" else None
            messages = {"429": "Rate limit reached", "400": "injected bad request"}
            self._error(int(kind), messages.get(kind, "injected server error"), headers)
            return
        if kind == "slow":
            time.sleep(float(arg or 5))
        if fmt not in ("wav", "pcm"):
            entry["status"] = 400
            self._error(400, f"this test server speaks wav or pcm, not {fmt}")
            return
        rate = int(arg) if kind == "rate" else state.rate
        pcm = speak(state, text, float(request.get("speed", 1.0)), rate)
        body = wav_bytes(pcm, rate) if fmt == "wav" else pcm.astype("<i2").tobytes()
        content_type = "audio/wav" if fmt == "wav" else "audio/pcm"
        with state.lock:
            entry.update(status=200, samples=len(pcm))
        if kind == "empty":
            self._send(200, b"", content_type)
        elif kind == "cut-wav":
            self._send(200, body[: 44 + (len(body) - 44) // 2], content_type)
        elif kind == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._send(200, body, content_type)

    def _log(self, entry: dict) -> None:
        with self.state.lock:
            self.state.log.append(entry)


def serve(port: int, rate: int, key: str | None, latency: float, port_file: str | None) -> None:
    """Run the server until killed."""
    state = _State(rate, key, latency)
    state.engine()  # espeak-ng initialised before the first request
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(server.server_address[1]))
        tmp.replace(port_file)
    server.serve_forever()


class SpeechServer:
    """The server as a separate process on 127.0.0.1 (a context manager).

    Parameters
    ----------
    workdir : Path
        Where its port file goes.
    key : str, optional
        The API key it wants (none: any request is served).
    rate : int
        Sample rate of its audio.
    latency : float
        Seconds added to every answer (a stand-in for a remote server's round trip).
    """

    def __init__(
        self, workdir: Path, key: str | None = None, rate: int = 24000, latency: float = 0.0
    ):
        self.workdir = Path(workdir)
        self.key, self.rate, self.latency = key, rate, latency
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> SpeechServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / f"openai-server-{os.getpid()}-{id(self)}.port"
        env = dict(os.environ)
        env.pop(KEY_VARIABLE, None)
        if self.key is not None:
            env[KEY_VARIABLE] = self.key
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--port", "0", "--rate", str(self.rate),
             "--latency", str(self.latency), "--port-file", str(port_file)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the speech server died: {self.proc.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the speech server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stderr.close()
            self.proc = None

    @property
    def url(self) -> str:
        """The base URL, as ``--endpoint`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, path: str, data: dict | None = None):
        body = None if data is None else json.dumps(data).encode()
        request = Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method="POST" if body else "GET"
        )
        with urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def control(
        self, faults: list[str] | None = None, always: str | None = "", clear_log: bool = False
    ) -> None:
        """Queue *faults* (one per coming request), set or clear (``None``) the *always* fault."""
        data: dict = {"clear_log": clear_log}
        if faults is not None:
            data["faults"] = faults
        if always != "":
            data["always"] = always
        self._call("/control", data)

    def log(self) -> list[dict]:
        """Every speech request so far."""
        return self._call("/log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8880)
    parser.add_argument("--rate", type=int, default=24000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    serve(args.port, args.rate, os.environ.get(KEY_VARIABLE), args.latency, args.port_file)


if __name__ == "__main__":
    main()
