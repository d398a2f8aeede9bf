"""A fake EC2 instance metadata service (IMDSv2 only) on 127.0.0.1, for the spot tests.

Like IMDSv2 with `HttpTokens: required` (the default on new launch templates): a GET without a
valid session token gets 401; `PUT /latest/api/token` with a TTL header issues one.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

ACTION_PATH = "/latest/meta-data/spot/instance-action"


class FakeIMDS:
    """State shared with the request handler; tests flip it between polls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: set[str] = set()
        self.issued = 0
        self.token_puts_without_ttl = 0
        self.tokenless_gets = 0
        self.authorized_gets = 0
        self.notice: str | None = None  # the instance-action body once "armed"
        self.reject_all_tokens = False  # every GET answers 401, even with a fresh token
        self.forbid_token = False  # PUT answers 403 (IMDS turned off for tokens)
        self.hang = threading.Event()  # set: requests stall until release is set
        self.release = threading.Event()
        self.url = ""

    def revoke_tokens(self) -> None:
        """As after a metadata service restart: issued tokens stop working."""
        with self.lock:
            self.tokens.clear()


def _handler(state: FakeIMDS) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _stall(self) -> bool:
            if state.hang.is_set():
                state.release.wait(timeout=30)
                return True
            return False

        def do_PUT(self) -> None:
            if self._stall():
                return
            if self.path != "/latest/api/token":
                self._reply(404)
                return
            if state.forbid_token:
                self._reply(403, b"Forbidden")
                return
            if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                with state.lock:
                    state.token_puts_without_ttl += 1
                self._reply(400, b"Missing TTL")
                return
            with state.lock:
                state.issued += 1
                token = f"token-{state.issued}"
                state.tokens.add(token)
            self._reply(200, token.encode())

        def do_GET(self) -> None:
            if self._stall():
                return
            token = self.headers.get("X-aws-ec2-metadata-token")
            with state.lock:
                valid = token in state.tokens and not state.reject_all_tokens
                if token is None:
                    state.tokenless_gets += 1
                elif valid:
                    state.authorized_gets += 1
            if not valid:
                self._reply(401, b"Unauthorized")
            elif self.path == ACTION_PATH and state.notice is not None:
                self._reply(200, state.notice.encode())
            else:
                self._reply(404, b"Not Found")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_imds() -> Iterator[FakeIMDS]:
    state = FakeIMDS()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}{ACTION_PATH}"
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
