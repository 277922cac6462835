"""A real HTTP receiver on 127.0.0.1 for webhook-sink tests: verifies HMAC signatures,
fails the first requests (or every one) with a chosen status, records accepted bodies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alerting.payloads import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


class Recorder:
    """What the receiver saw. 503 for the first ``fail_first`` requests, ``always`` (when
    set) for every request, 200 otherwise; 401 for a bad signature. ``always`` may be
    changed while serving (under ``lock``). ``statuses`` holds (monotonic time, status) of
    every request. ``error_body`` is the body of every error response. With ``secret``
    None, signatures are not checked (PagerDuty- and Slack-style receivers) and ``reply``
    makes the body of the n-th (1-based) accepted request's answer."""

    def __init__(
        self,
        secret: bytes | None,
        *,
        fail_first: int = 0,
        always: int | None = None,
        error_body: bytes = b"",
        reply: Callable[[int], bytes] | None = None,
    ) -> None:
        self.secret = secret
        self.reply = reply
        self.error_body = error_body
        self.lock = threading.Lock()
        self.fail_first = fail_first
        self.always = always
        self.requests = 0
        self.bad_signatures = 0
        self.accepted: list[bytes] = []
        self.statuses: list[tuple[float, int]] = []


def _handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ok = rec.secret is None or verify(
                rec.secret,
                body,
                self.headers[TIMESTAMP_HEADER],
                self.headers[SIGNATURE_HEADER],
                now=datetime.now(UTC),
            )
            with rec.lock:
                rec.requests += 1
                if not ok:
                    rec.bad_signatures += 1
                    status = 401
                elif rec.always is not None:
                    status = rec.always
                else:
                    status = 503 if rec.requests <= rec.fail_first else 200
                if status == 200:
                    if rec.secret is not None:
                        assert json.loads(body)["event_id"] == self.headers[EVENT_ID_HEADER]
                    rec.accepted.append(body)
                rec.statuses.append((time.monotonic(), status))
                if status >= 400:
                    reply = rec.error_body
                else:
                    reply = rec.reply(len(rec.accepted)) if rec.reply is not None else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return None

    return Handler


@contextmanager
def serve(rec: Recorder, path: str = "/hook", *, port: int = 0) -> Iterator[str]:
    """Run the receiver on a loopback port (ephemeral by default); yields its URL."""
    srv = ThreadingHTTPServer(("127.0.0.1", port), _handler(rec))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    try:
        yield f"http://{host!s}:{port}{path}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
