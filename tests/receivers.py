"""Real local receivers for notification tests: an HTTP server (standing in for the Telegram, Discord
and Slack APIs and for users' webhooks) and an SMTP server (aiosmtpd), both on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """Records every POST; answers from a per-path-prefix script of (status, headers, body), else 200."""

    def __init__(self) -> None:
        self.requests: list[Request] = []  # accepted (2xx)
        self.attempts: list[Request] = []  # every request, answered or refused
        self.script: dict[str, deque[tuple[int, dict[str, str], bytes]]] = {}
        # Slack's incoming webhooks answer a plain "ok"
        self.defaults: dict[str, tuple[int, dict[str, str], bytes]] = {"/slack": (200, {}, b"ok")}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    answer = receiver._answer(self.path)
                    request = Request(self.path, dict(self.headers.items()), body)
                    receiver.attempts.append(request)
                    if answer[0] < 300:
                        receiver.requests.append(request)
                status, headers, payload = answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        for prefix, queue in self.script.items():
            if path.startswith(prefix) and queue:
                return queue.popleft()
        for prefix, answer in self.defaults.items():
            if path.startswith(prefix):
                return answer
        return 200, {"Content-Type": "application/json"}, b'{"ok": true, "result": {}}'

    def fail_next(self, prefix: str, *answers: tuple[int, dict[str, str], bytes]) -> None:
        with self.lock:
            self.script.setdefault(prefix, deque()).extend(answers)

    def received(self, prefix: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def __enter__(self) -> HttpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: int = 300) -> bool:
    """What a webhook receiver does: check the HMAC and that the timestamp is recent."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= tolerance_s


class SmtpReceiver:
    """A real SMTP server on loopback that keeps every message it accepts."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.messages: list[tuple[str, list[str], bytes]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.url = f"mailto://127.0.0.1:{self.port}?from=alerts@tokenpulse.test&mode=insecure"

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
