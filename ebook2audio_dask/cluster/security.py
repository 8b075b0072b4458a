"""TLS between the client, the scheduler and the workers (Dask's own security settings).

* **Embedded cluster**: with ``ebook2audio.tls.embedded: true`` (or
  ``convert --tls``) it uses ``tls://`` with a throw-away self-signed
  certificate made at start (:meth:`distributed.security.Security.temporary`),
  on top of listening on 127.0.0.1 only.
* **Existing cluster**: give the CA file and this client's certificate and key
  (``--tls-ca-file``, ``--tls-cert``, ``--tls-key``, or ``ebook2audio.tls.*``);
  start the scheduler and workers with the same Dask options
  (``dask scheduler --tls-ca-file ca.pem --tls-cert node.pem --tls-key node.key``,
  ``dask worker tls://HOST:8786 --tls-ca-file ...``).  Encryption is then
  required: a plain ``tcp://`` connection is refused.
"""

from __future__ import annotations

import os

from .. import config
from ..errors import UsageError

__all__ = ["client_security", "embedded_security"]


def client_security(ca_file: str | None = None, cert: str | None = None, key: str | None = None):
    """A :class:`distributed.security.Security` for a client, or ``None`` for no TLS.

    Parameters
    ----------
    ca_file, cert, key : str, optional
        PEM files; default ``ebook2audio.tls.ca-file`` / ``.cert`` / ``.key``.
        *key* may be omitted when *cert* holds the key too.

    Raises
    ------
    UsageError
        Only some of them given, or a file that does not exist.
    """
    from distributed.security import Security

    ca_file = config.get("tls.ca-file", override=ca_file)
    cert = config.get("tls.cert", override=cert)
    key = config.get("tls.key", override=key)
    if not (ca_file or cert or key):
        return None
    if not (ca_file and cert):
        raise UsageError(
            "TLS needs at least --tls-ca-file and --tls-cert"
            " (and --tls-key unless the cert holds it)"
        )
    for what, path in (("--tls-ca-file", ca_file), ("--tls-cert", cert), ("--tls-key", key)):
        if path and not os.path.isfile(os.path.expanduser(path)):
            raise UsageError(f"{what} {path}: no such file")
    paths = {
        k: os.path.expanduser(v) for k, v in (("ca", ca_file), ("cert", cert), ("key", key)) if v
    }
    return Security(
        tls_ca_file=paths["ca"],
        tls_client_cert=paths["cert"],
        tls_client_key=paths.get("key"),
        require_encryption=True,
    )


def embedded_security(enabled: bool | None = None):
    """``Security.temporary()`` when TLS is wanted for the embedded cluster, else ``None``."""
    if not config.get("tls.embedded", override=enabled):
        return None
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError:
        raise UsageError(
            "TLS for the embedded cluster needs the cryptography package: pip install cryptography"
        ) from None
