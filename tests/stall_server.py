"""Servers that stall on purpose, for the storage timeout tests.

:class:`SilentServer` accepts connections and never answers (a server that hung
after accepting).  :class:`StuckListener` never completes a connection: its
accept queue is full, so the kernel drops new SYNs and ``connect`` waits (what a
CI run saw from a stuck ``moto_server``); :meth:`StuckListener.recover` makes it
accept again and forward every connection to a real server.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class SilentServer:
    """Accepts TCP connections on 127.0.0.1, reads what comes, never writes a byte."""

    def __init__(self):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        #: Connections accepted so far.
        self.connections = 0
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)  # kept open, never answered

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StuckListener:
    """A port on 127.0.0.1 whose connections never complete, until :meth:`recover`.

    It listens with a backlog of 0 and fills its accept queue with its own
    connections, never accepting them: later SYNs are dropped, so a client's
    ``connect`` hangs (the kernel would retry for about two minutes).
    """

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._fillers: list[socket.socket] = []
        for _ in range(4):  # more than the queue holds: the last ones wait in SYN_SENT
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        self._target: tuple[str, int] | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        #: Connections forwarded after :meth:`recover`.
        self.forwarded = 0

    def recover(self, target_url: str) -> None:
        """Accept again from now on, forwarding every connection to *target_url* (``http://host:port``)."""
        with self._lock:
            if self._target is not None:
                return
            host, port = target_url.removeprefix("http://").rsplit(":", 1)
            self._target = (host, int(port))
            for filler in self._fillers:  # their queued connections are accepted, then end at once
                filler.close()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=60)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            return
        with self._lock:
            self.forwarded += 1

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        for filler in self._fillers:
            filler.close()

    def __enter__(self) -> StuckListener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
