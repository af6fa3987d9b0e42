"""SSRF guard for user-supplied notification targets (webhooks and custom endpoints).

A target must be ``https`` and every address its host resolves to must be globally reachable:
private, loopback, link-local (cloud metadata lives there), multicast, reserved, unspecified and
every special-purpose range of IANA's registries (:data:`SPECIAL_PURPOSE`) are refused, and an
address that carries an IPv4 address inside it (IPv4-mapped or -compatible, 6to4, Teredo, NAT64)
is judged by that IPv4 address too. Operators can allow-list hosts or networks
(``TOKENPULSE_WEBHOOK_ALLOWLIST``): an allow-listed host may also use plain ``http`` (local
receivers in tests, an in-cluster relay).

:func:`check_target` resolves the host once and returns the addresses it checked
(:class:`Target`); the caller connects to one of those, never to a second resolution, so a DNS
answer that changes between the check and the connection (rebinding) cannot redirect it. The
same check runs when a rule is created and before every delivery, whatever path the rule came by.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(ValueError):
    """The URL may not be called; the message says why and what to do."""


def _nets(*entries: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), name) for net, name in entries)


# The entries of IANA's "IPv4 Special-Purpose Address Registry" and "IPv6 Special-Purpose Address Registry"
# (iana.org/assignments/iana-ipv4-special-registry, .../iana-ipv6-special-registry) whose "Globally
# Reachable" is False or N/A. The few reachable entries nested in them (PCP and TURN anycast, AS112) are
# anycast service addresses where no webhook lives: they are refused with their block. 64:ff9b::/96
# (NAT64, reachable) is not listed: an address there is judged by the IPv4 address it embeds.
SPECIAL_PURPOSE = _nets(
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private use"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link local"),
    ("172.16.0.0/12", "private use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private use"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("64:ff9b:1::/48", "IPv4-IPv6 translation (local use)"),
    ("100::/64", "discard only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("2001:10::/28", "deprecated ORCHID"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link local"),
)
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class Target:
    """A URL that passed the check, and the addresses it was checked at: connect only to these."""

    url: str
    scheme: str
    host: str
    """lower-case, as in the URL (ASCII: IDN hosts are given in their xn-- form)"""
    port: int
    addresses: tuple[str, ...]


def embedded_ipv4(ip: IPAddress) -> Iterator[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped and -compatible, 6to4, Teredo (server and
    client), NAT64 (the well-known prefix 64:ff9b::/96)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return
    if ip.ipv4_mapped is not None:
        yield ip.ipv4_mapped
    if ip.sixtofour is not None:
        yield ip.sixtofour
    if ip.teredo is not None:
        yield from ip.teredo
    if ip in NAT64_WELL_KNOWN or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        yield ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def refusal(address: str | IPAddress) -> str | None:
    """Why an address may not be called (None when it is a public unicast address)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    for inner in embedded_ipv4(ip):
        why = refusal(inner)
        if why:
            return f"it leads to {inner}, {why}"
    for net, name in SPECIAL_PURPOSE:
        if ip.version == net.version and ip in net:
            return f"{name} ({net})"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
        return "not a public unicast address"
    if not ip.is_global:
        return "not globally reachable"
    return None


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


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order of preference, each once."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"the host {host!r} does not resolve; check the URL") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parts(url: str) -> tuple[str, str, int]:
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
    if not host.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise TargetRefused("a webhook URL must be plain ASCII without spaces; give an IDN host in its xn-- form")
    return parts.scheme, host, port


def check_target(url: str, allowlist: Iterable[str] = ()) -> Target:
    """The checked :class:`Target` if ``url`` may be called, else :class:`TargetRefused` with the reason."""
    scheme, host, port = _parts(url)
    addresses = tuple(resolve(host, port))
    if _allowed(host, port, addresses, list(allowlist)):
        return Target(url, scheme, host, port, addresses)
    bad = [f"{a}: {why}" for a in addresses if (why := refusal(a))]
    if bad:
        raise TargetRefused(
            f"{host} resolves to an address that is not public ({'; '.join(bad)}); webhooks must reach "
            "a public address (operators can allow-list hosts in TOKENPULSE_WEBHOOK_ALLOWLIST)"
        )
    if scheme != "https":
        raise TargetRefused("webhook targets must use https://")
    return Target(url, scheme, host, port, addresses)
