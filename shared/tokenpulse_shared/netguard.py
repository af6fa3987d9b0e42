"""SSRF guard for user-supplied notification targets (webhooks and custom endpoints).

A target must be ``https`` and every address its host resolves to must be a
public unicast address: private, loopback, link-local (cloud metadata lives
there), multicast, reserved and unspecified ranges are refused. Operators can
allow-list hosts or networks (``TOKENPULSE_WEBHOOK_ALLOWLIST``): an
allow-listed host may also use plain ``http`` (local receivers in tests, an
in-cluster relay). The check runs when a rule is created *and* again before
every delivery, so a DNS answer that changes later (rebinding) is caught.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit


class TargetRefused(ValueError):
    """The URL may not be called; the message says why and what to do."""


def _allowed(host: str, port: int, addresses: Iterable[str], allowlist: Iterable[str]) -> bool:
    for entry in allowlist:
        entry = entry.strip().lower()
        if not entry:
            continue
        if "/" in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if all(ipaddress.ip_address(a) in net for a in addresses):
                return True
        elif entry in (host, f"{host}:{port}"):
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve; check the URL") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_target(url: str, allowlist: Iterable[str] = ()) -> str:
    """Return ``url`` if it may be called, else raise :class:`TargetRefused` with the reason."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused("a webhook target must be an https:// URL with a host name")
    if parts.username or parts.password:
        raise TargetRefused("credentials in webhook URLs are not accepted; use a token in the path or query")
    allowlist = list(allowlist)
    addresses = resolve(host, port)
    if _allowed(host, port, addresses, allowlist):
        return url
    bad = [a for a in addresses if not _public(a)]
    if bad:
        raise TargetRefused(
            f"{host} resolves to a private, loopback or link-local address ({', '.join(bad)}); "
            "webhooks must reach a public address (operators can allow-list hosts in TOKENPULSE_WEBHOOK_ALLOWLIST)"
        )
    if parts.scheme != "https":
        raise TargetRefused("webhook targets must use https://")
    return url
