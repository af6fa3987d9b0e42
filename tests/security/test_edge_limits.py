"""Resource limits and trust boundaries of a real ``tokenpulse up``: streams per key, slow and idle
connections, wrong keys, over-size bodies however framed, forwarded headers, redirects, symbols.

Raw sockets play the clients that HTTP libraries would not be: a slowloris, a client that goes quiet
half-way through a body, a body whose framing lies about its size.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.security.conftest import ADMIN, UpServer

pytestmark = pytest.mark.e2e

TIGHT = {
    "TOKENPULSE_HTTP_HEADER_TIMEOUT_S": "2",
    "TOKENPULSE_HTTP_KEEPALIVE_S": "1",  # shorter than the header deadline, so each shows on its own
    "TOKENPULSE_HTTP_BODY_TIMEOUT_S": "2",
    "TOKENPULSE_AUTH_FAILURES_PER_MINUTE": "5",
    "TOKENPULSE_KEY_ISSUE_PER_HOUR": "3",
}


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpServer]:
    """Short deadlines, few wrong keys and key issues, no trusted proxy (the default)."""
    up = UpServer(tmp_path_factory.mktemp("tight"), TIGHT).start()
    yield up
    up.stop()


def connect(up: UpServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", up.port), timeout=10)


def closed_after(sock: socket.socket, limit_s: float) -> tuple[float | None, bytes]:
    """Read until the server closes the connection: (seconds it took, or None if still open after
    ``limit_s``; everything received)."""
    t0, data = time.monotonic(), b""
    while time.monotonic() - t0 < limit_s:
        ready, _, _ = select.select([sock], [], [], 0.1)
        if ready:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - t0, data
            if not chunk:
                return time.monotonic() - t0, data
            data += chunk
    return None, data


def admin_key(up: UpServer) -> str:
    r = httpx.post(f"{up.base}/v1/admin/keys", json={"name": "edge", "tier": "free"}, headers={"X-Admin-Token": ADMIN})
    r.raise_for_status()
    return str(r.json()["key"])


# ---- streams -------------------------------------------------------------------------------------


def test_a_free_key_holds_two_streams_a_third_is_refused_until_one_closes(server: UpServer) -> None:
    key = {"X-API-Key": server.key()}
    with httpx.Client(base_url=server.base, timeout=10) as client, ExitStack() as streams:
        held = [streams.enter_context(client.stream("GET", "/v1/stream", headers=key)) for _ in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        with client.stream("GET", "/v1/stream", headers=key) as third:
            third.read()
        assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_streams", third.text
        assert "2 open streams" in third.json()["error"]["message"] and int(third.headers["Retry-After"]) > 0
        held[0].close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closed connection, then the slot is free
            again = streams.enter_context(client.stream("GET", "/v1/stream", headers=key))
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.2)
        assert again.status_code == 200


# ---- slow and idle connections -----------------------------------------------------------------


def test_a_slowloris_is_cut_off_by_the_header_deadline(tight: UpServer) -> None:
    sock = connect(tight)
    t0 = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tokenpulse\r\n")
    closed = None
    for i in range(12):  # a header line every second, for up to 12 s
        closed, _ = closed_after(sock, 1.0)
        if closed is not None:
            break
        try:
            sock.sendall(f"X-Pad-{i}: {'a' * 20}\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            break
    held = time.monotonic() - t0
    sock.close()
    assert held < 2 + 1.5, f"a never-ending request head held the connection {held:.1f} s (deadline 2 s)"


def test_a_connection_that_says_nothing_is_closed(tight: UpServer) -> None:
    with connect(tight) as sock:
        closed, data = closed_after(sock, 6)
    assert closed is not None and closed < 2 + 1.5 and data == b"", (closed, data)


def test_an_idle_keep_alive_connection_is_closed(tight: UpServer) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: tokenpulse\r\n\r\n")
        closed, data = closed_after(sock, 8)
    assert data.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in data
    assert closed is not None and 0.7 < closed < 1.8, closed  # the keep-alive of 1 s, not uvicorn's 5


def test_a_body_that_stops_arriving_gets_408(tight: UpServer) -> None:
    with connect(tight) as sock:
        sock.sendall(b"POST /v1/keys HTTP/1.1\r\nHost: tokenpulse\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: 100\r\n\r\n" + b'{"name": "slo')
        closed, data = closed_after(sock, 8)
    assert data.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in data, data
    assert closed is not None and closed < 2 + 1.5


# ---- wrong keys ----------------------------------------------------------------------------------


def test_wrong_keys_from_one_address_get_429_after_the_threshold(tight: UpServer) -> None:
    good = admin_key(tight)
    with httpx.Client(base_url=tight.base, timeout=10) as client:
        assert client.get("/v1/tokens", headers={"X-API-Key": good}).status_code == 200
        codes = [client.get("/v1/tokens", headers={"X-API-Key": f"tp_guess{i:04d}"}).status_code for i in range(8)]
        refused = client.get("/v1/tokens", headers={"X-API-Key": "tp_guess9999"})
        still = client.get("/v1/tokens", headers={"X-API-Key": good})
    assert codes == [401] * 5 + [429] * 3, codes
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_wrong_keys"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert still.status_code == 200  # a key this replica already knows still works from that address


def test_wrong_admin_tokens_are_throttled_like_wrong_keys(up_server: Callable[..., UpServer]) -> None:
    up = up_server(TOKENPULSE_AUTH_FAILURES_PER_MINUTE="3")
    with httpx.Client(base_url=up.base, timeout=10) as client:
        codes = [
            client.get("/v1/admin/keys/0123456789abcdef", headers={"X-Admin-Token": f"guess-{i}"}).status_code
            for i in range(5)
        ]
        right = client.get("/v1/admin/keys/0123456789abcdef", headers={"X-Admin-Token": ADMIN})
    assert codes == [403] * 3 + [429] * 2, codes
    assert right.status_code == 429  # the address is throttled for a while, whatever it sends


# ---- body size, however framed -------------------------------------------------------------------


def send_body(up: UpServer, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request head and body chunks, stopping as soon as the server answers; the answer."""
    with connect(up) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0.02)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        return closed_after(sock, 10)[1]


def chunked(total: int, size: int = 4096) -> list[bytes]:
    part = b"x" * size
    return [b"%x\r\n%s\r\n" % (size, part) for _ in range(total // size)] + [b"0\r\n\r\n"]


POST = b"POST /v1/keys HTTP/1.1\r\nHost: tokenpulse\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"Transfer-Encoding: chunked\r\n", id="chunked-without-length"),
        pytest.param(b"Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", id="lying-content-length"),
    ],
)
def test_an_over_size_body_gets_413_however_it_is_framed(server: UpServer, headers: bytes) -> None:
    answer = send_body(server, POST + headers + b"\r\n", chunked(80 * 1024))
    assert answer.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in answer, answer[:300]


def test_a_declared_over_size_body_gets_413_before_it_is_sent(server: UpServer) -> None:
    answer = send_body(server, POST + b"Content-Length: 10000000\r\n\r\n", [])
    assert answer.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in answer, answer[:300]


def test_a_small_chunked_body_is_still_read(server: UpServer) -> None:
    body = b'{"name": "chunked client"}'
    answer = send_body(
        server,
        POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        [b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)],
    )
    assert answer.startswith(b"HTTP/1.1 201") and b'"key":"tp_' in answer.replace(b" ", b""), answer[:300]


# ---- forwarded headers -----------------------------------------------------------------------------


def issue_keys(up: UpServer, forwarded_for: list[str]) -> list[int]:
    return [
        httpx.post(f"{up.base}/v1/keys", json={"name": "xff"}, headers={"X-Forwarded-For": ip}).status_code
        for ip in forwarded_for
    ]


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(tight: UpServer) -> None:
    spoofed = [f"203.0.113.{i}" for i in range(1, 6)]  # a new "client" per request
    assert issue_keys(tight, spoofed) == [201, 201, 201, 429, 429]


def test_a_trusted_proxy_is_believed(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"TOKENPULSE_TRUSTED_PROXIES": "127.0.0.1", "TOKENPULSE_KEY_ISSUE_PER_HOUR": "2"}
    up = UpServer(tmp_path_factory.mktemp("proxied"), env).start()
    try:
        first = issue_keys(up, ["198.51.100.7"] * 3)
        second = issue_keys(up, ["198.51.100.8", "198.51.100.8, 10.0.0.1"])
    finally:
        up.stop()
    assert first == [201, 201, 429]  # one client behind the proxy: its own limit
    assert second == [201, 201]  # another client: another limit (the proxy's own address is not the client)


# ---- redirects and symbols ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/v1/tokens/", "/static", "/static/", "/dashboard/", "/docs/", "/healthz/"])
def test_host_is_never_echoed_in_a_location(server: UpServer, path: str) -> None:
    r = httpx.get(f"{server.base}{path}", headers={"Host": "evil.example"}, follow_redirects=False)
    location = r.headers.get("location", "")
    assert "evil.example" not in location and (not location or location.startswith("/")), (r.status_code, location)


@pytest.mark.parametrize("path", ["/v1/candles/BTC%0A", "/v1/tokens/BTC%0A", "/v1/levels/BTC%0A"])
def test_a_symbol_with_a_trailing_newline_is_a_400(server: UpServer, path: str) -> None:
    r = httpx.get(f"{server.base}{path}", headers={"X-API-Key": server.key()})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_symbol", r.text
