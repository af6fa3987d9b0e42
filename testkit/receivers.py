"""Real local receivers for notification tests: an HTTP server (standing in for the Telegram, Discord
and Slack APIs and for users' webhooks) and an SMTP server (aiosmtpd), both on loopback."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from aiosmtpd.controller import Controller


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class _QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and reads a request's whole body."""

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, *args: object) -> None:
        return None


class _Server(ThreadingHTTPServer):
    # the default listen backlog (5) resets connections when many deliveries arrive at once
    request_queue_size = 128


class LoopbackServer:
    """A server on a thread of its own: ``with`` starts it, and shuts it down after."""

    server: ThreadingHTTPServer
    thread: threading.Thread

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpReceiver(LoopbackServer):
    """Records every POST; answers from a per-path-prefix script of (status, headers, body), else 200."""

    def __init__(self, hold_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hold_s = hold_s  # each request is held this long before its answer
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests held at once
        self.requests: list[Request] = []  # accepted (2xx)
        self.attempts: list[Request] = []  # every request, answered or refused
        self.script: dict[str, deque[tuple[int, dict[str, str], bytes]]] = {}
        # Slack's incoming webhooks answer a plain "ok"
        self.defaults: dict[str, tuple[int, dict[str, str], bytes]] = {"/slack": (200, {}, b"ok")}
        self.lock = threading.Lock()
        receiver = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                body = self.read_body()
                if receiver.hold_s:
                    with receiver.lock:
                        receiver.in_flight += 1
                        receiver.peak_in_flight = max(receiver.peak_in_flight, receiver.in_flight)
                    time.sleep(receiver.hold_s)
                    with receiver.lock:
                        receiver.in_flight -= 1
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

        self.server = _Server((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
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


@dataclass
class SpanRecord:
    service: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 4 PRODUCER, 5 CONSUMER
    trace_id: str
    span_id: str
    parent_span_id: str
    links: list[tuple[str, str]]  # (trace_id, span_id)
    attributes: dict[str, Any]


def _value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as Python: scalars as they are, arrays as tuples."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


class OtlpReceiver(LoopbackServer):
    """An OTLP/HTTP trace receiver on loopback: decodes every ``ExportTraceServiceRequest`` (protobuf, as the
    OpenTelemetry SDK's ``OTLPSpanExporter`` sends it to ``$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces``)."""

    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                body = self.read_body()
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver._decode(body)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _decode(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        out = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    out.append(
                        SpanRecord(
                            service=service,
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                            attributes=attributes,
                        )
                    )
        with self.lock:
            self.spans.extend(out)

    def trace(self, trace_id: str) -> list[SpanRecord]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]
