"""The server's guards: API token, session cookie, CSRF, Host check and security headers.

Everything here runs in :class:`SecurityMiddleware`, a plain ASGI middleware
around the whole application (page, static files, ``/docs``,
``/openapi.json``, ``/healthz``, the REST API and ``/v1/...``), in this order:

1. **Host header** (DNS rebinding): the request's ``Host`` must be a loopback
   name, the bound host, an IP literal when the server is bound to every
   interface, or one of ``allowed_hosts``; anything else gets 400.
2. **Token** (when one is set): an ``Authorization: Bearer TOKEN`` header, or
   the session cookie ``e2a_session`` that ``POST /api/session`` sets after
   checking the token.  Both are compared in constant time
   (:func:`hmac.compare_digest`); a token is never accepted in a query string
   (so never in an access log), and never logged.  Without either: 401 (the
   page answers a small login form instead).
3. **CSRF** for unsafe methods (POST, PUT, PATCH, DELETE): an
   ``Authorization`` header (what scripts and the ``openai`` client send; a
   browser never adds one to a cross-site request), or an ``X-CSRF-Token``
   header equal to the ``e2a_csrf`` cookie (the page reads it from its
   ``<meta name="csrf-token">``).  A present ``Origin`` must be this server's.
   Otherwise 403.
4. **Headers** on every response: a Content-Security-Policy
   (:data:`CSP`, unless the route set its own), ``X-Content-Type-Options:
   nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` (no
   referrer ever leaves for another site; ``no-referrer`` would make browsers send
   ``Origin: null`` with this server's own form POSTs),
   ``Cross-Origin-Opener-Policy: same-origin``, ``Cross-Origin-Resource-Policy:
   same-origin``; ``Cache-Control: no-store`` on everything but ``/static/``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from .settings import ServeSettings, is_loopback

__all__ = [
    "CSP",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SecurityMiddleware",
    "host_allowed",
    "login_page",
    "new_csrf_token",
    "new_session",
    "session_valid",
    "token_matches",
]

#: The session cookie ``POST /api/session`` sets (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "e2a_session"
#: The CSRF cookie (readable by the page's script, SameSite=Strict).
CSRF_COOKIE = "e2a_csrf"
#: The header an unsafe request repeats the CSRF cookie's value in.
CSRF_HEADER = "x-csrf-token"

#: The Content-Security-Policy of every response that does not set its own.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD = frozenset({"0.0.0.0", "::", ""})
#: The one route answered without the token (its POST: the login itself).
_LOGIN = "/api/session"


def token_matches(given: str | None, token: str | None) -> bool:
    """True when *given* is *token*, compared in constant time (False when either is empty)."""
    if not given or not token:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _sign(token: str, nonce: str) -> str:
    key = hashlib.sha256(b"ebook2audio-session\0" + token.encode("utf-8")).digest()
    return hmac.new(key, nonce.encode("ascii"), hashlib.sha256).hexdigest()


def new_session(token: str) -> str:
    """A session cookie value: a random nonce and its HMAC keyed by (a hash of) *token*.

    It holds no part of the token, needs no server-side state (it stays valid
    across restarts), and stops being valid when the token changes.
    """
    nonce = secrets.token_hex(16)
    return f"{nonce}.{_sign(token, nonce)}"


def session_valid(value: str | None, token: str | None) -> bool:
    """True when *value* is a session cookie :func:`new_session` made with *token*."""
    if not value or not token or "." not in value:
        return False
    nonce, _, sig = value.partition(".")
    if not nonce.isascii() or not nonce.isalnum() or len(nonce) > 64:
        return False
    return hmac.compare_digest(sig.encode("ascii", "replace"), _sign(token, nonce).encode())


def new_csrf_token() -> str:
    """A fresh random CSRF token (the ``e2a_csrf`` cookie's value)."""
    return secrets.token_urlsafe(32)


def _host_name(value: str) -> str:
    """``example.org:7860`` → ``example.org``; ``[::1]:7860`` → ``::1``; lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str | None, settings: ServeSettings) -> bool:
    """Whether a request's ``Host`` header names this server (no DNS rebinding).

    Accepted: loopback names and addresses, the bound host, any IP literal when
    bound to every interface (``0.0.0.0``, ``::``: a rebinding attack needs a
    name), and ``settings.allowed_hosts`` (with or without a port).
    """
    if not host_header:
        return False
    name = _host_name(host_header)
    if not name:
        return False
    if name in _LOOPBACK_NAMES or (_is_ip(name) and is_loopback(name)):
        return True
    bound = _host_name(settings.host)
    if name == bound:
        return True
    if bound in _WILDCARD and _is_ip(name):
        return True
    allowed = {h.strip().lower() for h in settings.allowed_hosts}
    return host_header.strip().lower() in allowed or name in allowed


def _origin_matches(origin: str, host_header: str) -> bool:
    """A present ``Origin`` must be ``http(s)://<Host header>``."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == host_header.strip().lower()


_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>ebook2audio: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<main>
<h1>ebook2audio</h1>
<p>{message}</p>
<form method="post" action="/api/session">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""


def login_page(message: str = "This server needs its API token.") -> bytes:
    """The small self-contained sign-in page (no script, no style): a form POSTing the token."""
    return _LOGIN_PAGE.format(message=html.escape(message)).encode("utf-8")


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookies(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is no cookie
        return {}
    return {k: m.value for k, m in jar.items()}


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


class SecurityMiddleware:
    """ASGI middleware: Host check, token or session, CSRF, security headers (module docstring).

    Parameters
    ----------
    app : ASGI application
        The application it guards.
    settings : ServeSettings
        Token, bound host and allowed hosts.
    """

    def __init__(self, app: Callable, settings: ServeSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        no_store = not path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in _HEADERS if h[0] not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                if no_store and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        refusal = self.refusal(scope)
        if refusal is None and self.body_limited(scope):
            receive, refusal = await self.read_body(scope, receive)
        if refusal is not None:
            status, body, content_type, extra = refusal
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)

    def body_limit(self) -> int:
        """Most bytes of a request body other than an upload: a ``/v1/audio/speech`` input
        of ``speech-max-chars`` characters, JSON-escaped (6 bytes each), and 64 KiB more."""
        return 6 * int(self.settings.speech_max_chars) + 65536

    def body_limited(self, scope: Scope) -> bool:
        """True for a request whose body is read whole by its route (all but uploads)."""
        method = scope.get("method", "GET").upper()
        return method in ("POST", "PUT", "PATCH", "DELETE") and not scope.get(
            "path", ""
        ).startswith("/api/uploads")

    async def read_body(self, scope: Scope, receive: Receive):
        """Read the body here, at most :meth:`body_limit` bytes: ``(receive, None)`` with a
        ``receive`` that replays it, or ``(receive, refusal)`` (413) when it is larger, so
        no route ever holds an unbounded body in memory."""
        limit = self.body_limit()
        declared = _headers(scope).get("content-length", "")
        too_large = (413, b'{"detail":"request body too large"}', b"application/json", [])
        if declared.isdigit() and int(declared) > limit:
            return receive, too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive, None  # the client went away: the route sees it as it would
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return receive, too_large
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None

    def refusal(self, scope: Scope) -> tuple[int, bytes, bytes, list] | None:
        """``(status, body, content type, more headers)`` when the request is refused, else None."""
        headers = _headers(scope)
        method = scope.get("method", "GET").upper()
        path = scope.get("path", "")
        host = headers.get("host")
        if not host_allowed(host, self.settings):
            return _json(400, "this server does not answer to that Host header")
        authorization = headers.get("authorization")
        cookies = _cookies(headers.get("cookie"))
        token = self.settings.token
        login = path == _LOGIN and method == "POST"
        if token and not login:
            ok = token_matches(_bearer(authorization), token) or session_valid(
                cookies.get(SESSION_COOKIE), token
            )
            if not ok:
                if method in ("GET", "HEAD") and path in ("/", "/index.html"):
                    return 401, login_page(), b"text/html; charset=utf-8", []
                status, body, ctype, extra = _json(401, "an API token is required")
                return status, body, ctype, [*extra, (b"www-authenticate", b"Bearer")]
        if method in _UNSAFE:
            origin = headers.get("origin")
            if origin is not None and not _origin_matches(origin, host or ""):
                return _json(403, "cross-origin request refused (Origin does not match Host)")
            if authorization is None and not login:
                given = headers.get(CSRF_HEADER)
                expected = cookies.get(CSRF_COOKIE)
                if (
                    not given
                    or not expected
                    or not hmac.compare_digest(given.encode("latin-1"), expected.encode("latin-1"))
                ):
                    return _json(
                        403,
                        "CSRF check failed: send the X-CSRF-Token header (GET /api/csrf) "
                        "or an Authorization header",
                    )
        return None


def _json(status: int, detail: str) -> tuple[int, bytes, bytes, list]:
    return status, json.dumps({"detail": detail}).encode(), b"application/json", []
