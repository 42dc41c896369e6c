"""Request guards: body size and content type (one ASGI middleware), the optional API key, bind warnings."""

from __future__ import annotations

import asyncio
import errno
import hmac
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polymodal.serve.errors import ApiError, error_response
from polymodal.serve.settings import LOOPBACK_HOSTS

JSON = "application/json"
MULTIPART = "multipart/form-data"


def media_type(content_type: str | None) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class RequestGuard:
    """Refuses a request body of the wrong type (415), over ``max_body_bytes`` (413) or stalled (408) before any
    endpoint runs.

    The size is checked against Content-Length when there is one and, always, while the body streams in, so a
    chunked upload without a length (or with a false one) is cut off at the limit rather than read whole.
    A body that stops coming for ``body_timeout`` seconds (between two reads, as nginx's client_body_timeout) is
    answered 408 and its connection closed: uvicorn's own timeouts cover idle connections, not a stalled body.
    The accepted body is then replayed to the app, which therefore never sees more than the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        content_types: Mapping[str, tuple[str, ...]],
        body_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.content_types = content_types  # path -> accepted media types, for the routes that take a body
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check_headers(scope["path"], headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                await self._timed_out()(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay(bytes(body), receive), send)

    def _check_headers(self, path: str, headers: Headers) -> Callable[..., Awaitable[None]] | None:
        allowed = self.content_types.get(path)
        if allowed is not None and media_type(headers.get("content-type")) not in allowed:
            got = media_type(headers.get("content-type")) or "no Content-Type"
            return error_response(415, "unsupported_media_type", f"{path} accepts {' or '.join(allowed)}, got {got}")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, "bad_request", f"invalid Content-Length header: {length!r}")
            if int(length) > self.max_body_bytes:
                return self._too_large()
        return None

    def _timed_out(self) -> Callable[..., Awaitable[None]]:
        return error_response(
            408,
            "request_timeout",
            f"the request body stopped coming: nothing arrived for {self.body_timeout:g} s",
            {"Connection": "close"},  # the rest of the body may still come: the connection cannot be reused
        )

    def _too_large(self) -> Callable[..., Awaitable[None]]:
        mb = self.max_body_bytes / (1024 * 1024)
        return error_response(
            413,
            "too_large",
            f"request body is over the upload limit of {mb:g} MB ({self.max_body_bytes:,} bytes)",
            {"Connection": "close"},
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls only wait for the disconnect

    return replay


def api_key_dependency(expected: str) -> Callable[..., Any]:
    """A FastAPI dependency accepting ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

    Declared through FastAPI's security classes so the OpenAPI schema shows both schemes.
    """
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API key>")
    expected_bytes = expected.encode()

    async def require_api_key(
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
        api_key: str | None = Security(header),
    ) -> None:
        supplied = credentials.credentials if credentials is not None else api_key
        # compare_digest: the time taken must not reveal how many leading characters were right.
        if supplied is None or not hmac.compare_digest(supplied.encode(), expected_bytes):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                {"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


def bind_warning(host: str, api_key: str | None) -> str | None:
    """A warning when ``host`` exposes the server beyond this machine, stronger without an API key."""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    where = "all network interfaces" if host in ("0.0.0.0", "::", "") else f"{host}"
    message = f"binding {where}: anyone who can reach this machine can use the server"
    if api_key is None:
        message += " WITHOUT AUTHENTICATION (set --api-key or POLYMODAL_API_KEY)"
    return message


def listen_error(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host``:``port`` (an unknown host, a port in use or not allowed), found
    before the model loads; None where a socket binds there now (as uvicorn's will: address reuse on)."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot listen on --host {host!r}: {e.strerror}"
    bound, failure = 0, None
    for family, kind, proto, _, address in found:  # every address, as uvicorn's server binds them
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
            bound += 1
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:  # an address this host lacks (IPv6 off) is skipped, as uvicorn does
                failure = failure or f"cannot listen on {host}:{port}: {e.strerror or e}"
    return failure if failure or bound else f"cannot listen on {host}:{port}: no address of it is on this machine"


# The page loads only its own files: no CDN, no inline script, no framing by other sites.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]


class SecurityHeaders:
    """Adds the headers above to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
