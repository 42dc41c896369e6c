"""A stalled upload over a real socket: answered 408 after the body timeout and logged so; a client that leaves
is logged as having left (499), not as a server error (500)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from polymodal.api import Model
from polymodal.serve import ServeSettings, create_app
from polymodal.serve.traffic import access_logger
from tests.serve.live import serve

BOUNDARY = "----stall"
PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode() + b"\x89PNG"
HEAD = (
    f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
    "Content-Length: 100000\r\n\r\n"
).encode()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def server(model: Model) -> Iterator[tuple[int, Lines]]:
    """uvicorn on a free port in a thread, with a 0.5 s body timeout; the access lines it logs."""

    log = Lines()
    saved = (access_logger.handlers, access_logger.level, access_logger.propagate)
    access_logger.handlers, access_logger.propagate = [log], False
    access_logger.setLevel(logging.INFO)
    app = create_app(model, settings=ServeSettings(body_timeout_seconds=0.5))
    try:
        with serve(app) as url:
            yield int(url.rsplit(":", 1)[1]), log
    finally:
        access_logger.handlers, access_logger.propagate = saved[0], saved[2]
        access_logger.setLevel(saved[1])


def wait_for_line(log: Lines, needle: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [line for line in log.lines if needle in line]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no access line with {needle!r} in {log.lines}")


def read_response(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):  # the server closes the connection after answering
        data += chunk
    return data


def test_a_body_that_stalls_is_answered_408_and_logged_so(server: tuple[int, Lines]) -> None:
    port, log = server
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(10)  # far beyond the server's 0.5 s: without a body timeout this fails
        conn.sendall(HEAD + PART)  # 100,000 bytes announced, a few sent, then nothing
        started = time.monotonic()
        response = read_response(conn)
        waited = time.monotonic() - started
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "0.5 s" in error["message"]
    assert 0.4 < waited < 5
    assert '"POST /embed" 408 ' in wait_for_line(log, '"POST /embed" 408 ')


def test_a_client_that_leaves_mid_body_is_not_logged_as_a_500(server: tuple[int, Lines]) -> None:
    port, log = server
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(HEAD + PART)
        time.sleep(0.1)
    wait_for_line(log, '"POST /embed" 499 ')
    assert not [line for line in log.lines if " 500 " in line]


def test_a_body_that_keeps_coming_is_not_cut_off(server: tuple[int, Lines]) -> None:
    """The timeout is between reads, not for the whole body: a slow but steady upload is read to its end."""
    port, _ = server
    pieces = (b'{"te', b'xts"', b': ["a', b'"]}')  # 1.2 s in all, 0.3 s apart: each gap under the 0.5 s
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(10)
        conn.sendall(
            f"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(b''.join(pieces))}\r\n\r\n".encode()
        )
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.3)
        response = read_response(conn)
    assert response.startswith(b"HTTP/1.1 200 "), response[:300]


def test_settings_refuse_a_body_timeout_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="body_timeout_seconds must be > 0"):
        ServeSettings(body_timeout_seconds=0)
