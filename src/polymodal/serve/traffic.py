"""Requests in flight and the access log: one ASGI middleware, and a log written off the request path.

The count of active requests lets the micro-batcher know whether company for a batch may still come. Access lines go
to the ``polymodal.access`` logger; :func:`start_access_log` sends that logger's records through a queue to a thread
that formats and writes them, so a slow terminal or disk never holds a request up.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("polymodal.access")
ACCESS_FORMAT = "%(asctime)s %(message)s"
CLIENT_CLOSED = 499  # logged (never sent) for a request whose client closed the connection before the answer


class ActiveRequests:
    """How many requests that may call the model (those with a body: POST) the server is handling now."""

    def __init__(self) -> None:
        self.count = 0  # changed only on the event loop's thread; read from the batcher's as one int

    def __call__(self) -> int:
        return self.count


class Traffic:
    """Counts active requests into ``active`` and logs every HTTP request."""

    def __init__(self, app: ASGIApp, *, active: ActiveRequests) -> None:
        self.app = app
        self.active = active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = scope["method"] == "POST"
        status = None
        gone = False  # the client closed the connection
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def receive_noting_disconnect() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        self.active.count += counted
        try:
            await self.app(scope, receive_noting_disconnect, send_recording_status)
        finally:
            self.active.count -= counted
            if status is None:  # no answer: the client left first (nginx's 499), else the app failed (500)
                status = CLIENT_CLOSED if gone else 500
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                access_logger.info(
                    '%s "%s %s" %d %.1f ms',
                    client[0],
                    scope["method"],
                    scope["path"],
                    status,
                    1000 * (time.perf_counter() - started),
                )


def start_access_log(log_file: Path | None = None, *, terminal: bool = True) -> logging.handlers.QueueListener:
    """Route ``polymodal.access`` through a queue to the terminal (stderr) and/or ``log_file``; returns the listener
    thread (stop it to flush). With neither destination the logger is switched off."""
    handlers: list[logging.Handler] = []
    if terminal:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(ACCESS_FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    access_logger.handlers = [logging.handlers.QueueHandler(records)]
    access_logger.setLevel(logging.INFO if handlers else logging.WARNING)
    access_logger.propagate = False
    listener = logging.handlers.QueueListener(records, *handlers)
    listener.start()
    return listener
