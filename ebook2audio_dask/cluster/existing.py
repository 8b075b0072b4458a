"""The ``existing`` cluster backend: connect to a scheduler that is already running."""

from __future__ import annotations

from distributed import Client

from .. import config
from ..errors import UsageError, one_line
from .backends import ClusterRequest
from .security import client_security

__all__ = ["ExistingBackend"]


class ExistingBackend:
    """Connect to ``request.scheduler`` (``tcp://``, ``tls://``...); nothing is started.

    ``request.security`` (default from ``ebook2audio.tls.*``) is used to reach
    it; ``cluster.connect-timeout`` bounds the wait.  Closing closes the client
    only: the cluster stays up.
    """

    name = "existing"

    def start(self, request: ClusterRequest):
        """Connect to the scheduler of *request*; return ``(client, close)``.

        Raises
        ------
        UsageError
            No scheduler address, or the scheduler cannot be reached.
        """
        if not request.scheduler:
            raise UsageError("the existing cluster backend needs a scheduler address (--scheduler)")
        security = request.security or client_security()
        try:
            client = Client(
                request.scheduler,
                security=security,
                timeout=config.get("cluster.connect-timeout"),
            )
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            hint = (
                " (a tls:// scheduler needs --tls-ca-file and --tls-cert)"
                if security is None
                else ""
            )
            raise UsageError(
                f"cannot connect to scheduler {request.scheduler}: {one_line(exc)}{hint}"
            ) from exc
        return client, client.close
