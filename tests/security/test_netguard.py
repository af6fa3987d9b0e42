"""The SSRF guard on addresses: every special-purpose range refused, IPv4 hidden in IPv6 found, public
addresses let through; and the check at the URL level with a resolver that says what the test wants."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from tokenpulse_shared import netguard
from tokenpulse_shared.netguard import TargetRefused, check_target, refusal

# One address inside each entry of IANA's special-purpose registries that is not globally reachable,
# written out here (not read from the guard's table) so a dropped table row fails this test.
IANA_NOT_REACHABLE = [
    "0.1.2.3",  # 0.0.0.0/8 this network
    "0.0.0.0",  # 0.0.0.0/32 this host
    "10.20.30.40",  # 10.0.0.0/8
    "100.64.0.1",  # 100.64.0.0/10 shared address space
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "169.254.169.254",  # link local: cloud metadata
    "172.16.0.1",  # 172.16.0.0/12
    "172.31.255.254",
    "192.0.0.1",  # 192.0.0.0/24 IETF protocol assignments
    "192.0.0.8",  # IPv4 dummy address
    "192.0.0.170",  # NAT64/DNS64 discovery
    "192.0.2.1",  # TEST-NET-1
    "192.88.99.1",  # deprecated 6to4 relay anycast
    "192.168.1.1",  # 192.168.0.0/16
    "198.18.0.1",  # benchmarking
    "198.19.255.254",
    "198.51.100.7",  # TEST-NET-2
    "203.0.113.9",  # TEST-NET-3
    "240.0.0.1",  # reserved
    "255.255.255.255",  # limited broadcast
    "::1",  # loopback
    "::",  # unspecified
    "::ffff:8.8.8.8",  # IPv4-mapped (even of a public address: not reachable as such)
    "64:ff9b:1::808:808",  # IPv4-IPv6 translation, local use
    "100::1",  # discard only
    "100:0:0:1::1",  # dummy prefix
    "2001::1",  # Teredo / IETF protocol assignments
    "2001:2::1",  # benchmarking
    "2001:db8::1",  # documentation
    "2001:10::1",  # deprecated ORCHID
    "2002:808:808::1",  # 6to4 (even of a public address)
    "3fff::1",  # documentation
    "5f00::1",  # SRv6 SIDs
    "fd00:ec2::254",  # unique local: AWS metadata over IPv6
    "fc00::1",
    "fe80::1",  # link local
    "224.0.0.1",  # multicast (its own registry)
    "ff02::1",
    "fec0::1",  # site local (deprecated)
]

# IPv4 addresses that hide in IPv6 forms
HIDDEN_IPV4 = {
    "2002:7f00:1::": "127.0.0.1",  # 6to4 of loopback: the case the attack used
    "2002:a9fe:a9fe::1": "169.254.169.254",  # 6to4 of the metadata address
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "192.0.2.45",  # Teredo (RFC 4380's example), client obfuscated
    "64:ff9b::7f00:1": "127.0.0.1",  # NAT64 well-known prefix
    "64:ff9b::a9fe:a9fe": "169.254.169.254",
    "::ffff:127.0.0.1": "127.0.0.1",  # IPv4-mapped
    "::ffff:7f00:1": "127.0.0.1",
    "::127.0.0.1": "127.0.0.1",  # IPv4-compatible (deprecated)
    "::a00:1": "10.0.0.1",
}

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


@pytest.mark.parametrize("address", IANA_NOT_REACHABLE)
def test_every_special_purpose_address_is_refused(address: str) -> None:
    assert refusal(address), f"{address} was accepted as a webhook address"


@pytest.mark.parametrize(("address", "inner"), HIDDEN_IPV4.items())
def test_ipv4_hidden_in_ipv6_is_found_and_refused(address: str, inner: str) -> None:
    why = refusal(address)
    assert why, f"{address} (leads to {inner}) was accepted"
    assert inner in why or any(k in why for k in ("mapped", "6to4", "Teredo", "public")), why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def resolving(mapping: dict[str, list[str]]) -> Callable[..., Any]:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in mapping[host]
        ]

    return getaddrinfo


def test_a_host_resolving_to_a_6to4_loopback_is_refused_and_a_public_one_checked(monkeypatch: Any) -> None:
    names = {
        "sixtofour.example": ["2002:7f00:1::"],
        "mixed.example": ["93.184.215.14", "64:ff9b::a9fe:a9fe"],
        "public.example": ["93.184.215.14", "2606:4700:4700::1111"],
    }
    monkeypatch.setattr(netguard.socket, "getaddrinfo", resolving(names))
    with pytest.raises(TargetRefused, match=r"127\.0\.0\.1"):
        check_target("https://sixtofour.example/hook")
    with pytest.raises(TargetRefused, match=r"169\.254\.169\.254"):  # one bad address is enough
        check_target("https://mixed.example/hook")
    target = check_target("https://public.example:8443/hook")
    assert (target.host, target.port, target.addresses) == ("public.example", 8443, tuple(names["public.example"]))
    with pytest.raises(TargetRefused, match="https"):
        check_target("http://public.example/hook")  # plain http only for allow-listed hosts
    monkeypatch.setattr(netguard.socket, "getaddrinfo", _literal)
    for literal in ("https://[2002:7f00:1::]/", "https://[::ffff:127.0.0.1]/", "https://[64:ff9b::7f00:1]/"):
        with pytest.raises(TargetRefused):
            check_target(literal)


def _literal(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
    return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (host, port, 0, 0))]


def test_urls_that_are_not_plain_are_refused_before_any_lookup(monkeypatch: Any) -> None:
    def no_lookup(*args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("resolved a URL that should have been refused first")

    monkeypatch.setattr(netguard.socket, "getaddrinfo", no_lookup)
    for url in (
        "https://bücher.example/hook",  # IDN: give the xn-- form
        "https://hooks.example/a b",
        "https://hooks.example/\nx",
        "https://user:pw@hooks.example/",
        "ftp://hooks.example/",
        "https:///nohost",
    ):
        with pytest.raises(TargetRefused):
            check_target(url)
