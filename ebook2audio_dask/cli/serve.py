"""``ebook2audio serve``: the web page, REST API and speech endpoint (needs the ``serve`` extra).

Registered on the :func:`~ebook2audio_dask.cli.main.cli` group by
:mod:`ebook2audio_dask.cli.main`.  Runs uvicorn in the main thread: SIGTERM
or Ctrl-C stop it cleanly (running jobs go back to the queue, the cluster is
closed) and the command exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from typing import Any

import click

from ..errors import EXIT_OK, UsageError
from ..pipeline.options import options
from .main import click_option, debug_option, echo, fail, setup_logging

__all__ = ["CLUSTER_OPTIONS", "serve"]

#: The cluster options ``serve`` takes, as ``convert`` does.
CLUSTER_OPTIONS = ("scheduler", "slurm", "adapt", "n_workers", "gpus", "memory_limit", "cluster")


def _cluster_flags(function):
    for name in reversed(CLUSTER_OPTIONS):
        function = click_option(options()[name])(function)
    return click.option("--n-workers", "n_workers_alias", type=click.IntRange(min=1),
                        hidden=True)(function)  # fmt: skip


@click.command(name="serve")
@click.option("--host", metavar="HOST", help="Address to bind (default ebook2audio.serve.host: "
              "127.0.0.1). Anything but loopback requires an API token.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 7860).")
@click.option(
    "--data",
    metavar="DIR",
    help="The server's folder: job queue, uploads, and by default outputs and chunk store "
    "(default ebook2audio.serve.data).",
)
@click.option("-o", "--output", metavar="URL", help="Where audiobooks go (default <data>/outputs).")
@click.option("--cache", "cache_url", metavar="URL", help="Chunk store (default <data>/chunks).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the API token (else $EBOOK2AUDIO_TOKEN or ebook2audio.serve.token).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="HOST",
    help="Another Host header to answer (a reverse proxy's public name); repeatable.",
)
@_cluster_flags
@click_option(options()["engine_threads"])
@debug_option
def serve(
    host, port, data, output, cache_url, token_file, allowed_hosts, engine_threads, debug,
    **flags,
) -> None:  # fmt: skip
    """Serve the web page, the REST API (/docs) and /v1/audio/speech in front of a Dask
    cluster (embedded by default), with a job queue that survives restarts.

    Prints "serving on http://HOST:PORT" on stderr; SIGTERM or Ctrl-C stop it
    (running jobs are resumed at the next start).  See docs/serve.md.
    """
    setup_logging(debug)
    try:
        try:
            import uvicorn

            from ..serve.app import create_app
        except ImportError as exc:
            raise UsageError(
                f"ebook2audio serve needs the serve extra (pip install "
                f"'ebook2audio_dask[serve]'): {exc}"
            ) from None
        from ..serve import ServeSettings

        cluster = _cluster(flags)
        settings = ServeSettings.from_config(
            host=host,
            port=port,
            data=data,
            output=output,
            cache=cache_url,
            token_file=token_file,
            allowed_hosts=list(allowed_hosts) or None,
            cluster=cluster,
            engine_threads=engine_threads,
        )
        sock = _listen(settings.host, settings.port)  # a taken port: one line, nothing started
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            log_level="debug" if debug else "warning",
            server_header=False,
            lifespan="on",
            timeout_graceful_shutdown=10,  # then open connections are closed, not waited for
        )
        access = logging.getLogger("uvicorn.access")
        access.setLevel(logging.INFO)  # the access log stays on, without query strings
        access.addFilter(_without_query)
        # Without --debug, the runner's start failing (an embedded cluster that cannot
        # start...) is said as one line below, not as uvicorn's lifespan traceback.
        logging.getLogger("uvicorn.error").addFilter(
            lambda _record: debug or getattr(app.state, "startup_error", None) is None
        )
        server = _server(config, settings, app.state.runner)
        _quiet_signals()
        try:
            server.run(sockets=[sock])
        except SystemExit:  # uvicorn's own exit when the startup failed
            if app.state.startup_error is None:
                raise
        if app.state.startup_error is not None:
            raise app.state.startup_error
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line + exit code
        fail(exc, debug)
        return
    if not server.started:
        echo("error: the server did not start (see the messages above)", err=True)
        sys.exit(1)
    sys.exit(EXIT_OK)


def _without_query(record: logging.LogRecord) -> bool:
    """An access-log record with the query string cut from its path: a client may put
    there what must not be logged (the server never reads a token from it anyway)."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
        record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
    return True


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on *host*:*port*.

    Raises
    ------
    UsageError
        The address cannot be bound (taken, not this machine's...).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, proto, _, address = infos[0]
        # the protocol too: asyncio sets TCP_NODELAY only on sockets whose proto is TCP
        # (with 0, every keep-alive request after the first waited ~40 ms for Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
    except OSError as exc:
        raise UsageError(f"--host {host}: cannot listen there ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _cluster(flags: dict[str, Any]) -> dict[str, Any]:
    """The cluster flags → RunOptions keywords (parsed as ``convert`` parses them)."""
    given = {}
    if flags.get("n_workers") is None:  # --n-workers: another spelling of --workers
        flags["n_workers"] = flags.get("n_workers_alias")
    for name in CLUSTER_OPTIONS:
        opt = options()[name]
        value = flags.get(name)
        value = opt.parse(value) if opt.parse is not None else value
        if value not in (None, (), False):
            given[name] = value
    if given.get("scheduler") and (given.get("adapt") or given.get("slurm")):
        raise UsageError(
            "--scheduler runs on an existing cluster: it cannot be combined with --adapt or --slurm"
        )
    return given


def _quiet_signals() -> None:
    """SIGTERM and SIGINT handlers that do nothing.

    uvicorn replaces them while it serves, and raises the signal it caught again
    once it has shut down cleanly; these handlers take that second delivery, so a
    clean stop exits 0 instead of dying of the signal.
    """
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)


def _server(config, settings, runner):
    """A uvicorn server that prints where it serves once it listens (uvicorn is imported
    here: it is optional)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.should_exit:
                return
            port = settings.port
            for server in getattr(self, "servers", []):
                for sock in getattr(server, "sockets", []) or []:
                    port = sock.getsockname()[1]
            settings.port = port
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            link = getattr(runner, "dashboard_link", None)
            dashboard = f" (dashboard: {link})" if link else ""
            echo(f"serving on http://{host}:{port}{dashboard}", err=True)

        async def shutdown(self, sockets=None) -> None:
            # uvicorn waits for open responses: end the event streams first, or a page
            # following a long job would hold a SIGTERM until the job ends
            changes = getattr(self.config.app.state, "changes", None)
            if changes is not None:
                changes.close_streams()
            await super().shutdown(sockets)

    return Server(config)
