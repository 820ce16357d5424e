"""What the downloader may connect to: address safety, before and during each connection.

- `check_url`: the checks that need no lookup, made on every hop before it is requested:
  only http/https, no user name or password in the URL (`credentials_in_redirect`: read
  already dropped input urls holding them), a host, and an
  IP-literal host that is allowed (non-canonical numeric hosts such as "127.1" are refused
  outright).
- `SafeResolver`: aiohttp's resolver. It looks a name up and refuses the host if any of its
  addresses is not allowed; aiohttp then connects to exactly the addresses that were checked,
  so there is no DNS-rebinding window.
- `address_refusal`: the rule itself. Private, loopback, link-local, multicast, reserved and
  other non-global addresses are refused, also when embedded in an IPv6 address (6to4,
  Teredo, NAT64). --allow-loopback lets 127.0.0.0/8 and ::1 through.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Optional

from aiohttp.abc import AbstractResolver
from yarl import URL

from openwit.pipeline.common.urls import SCHEMES
from openwit.pipeline.download.resolve import Lookup, system_lookup


class BlockedAddress(OSError):
    """A host that resolves to an address openwit must not connect to."""


@dataclass(frozen=True)
class Refusal:
    """Why a URL is not requested: a name from schemas/reasons.py and a detail."""
    reason: str
    detail: str


# Refused whatever Python's is_global tables say (they changed between 3.11 patch releases).
_DENIED_NETWORKS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    "::/128", "100::/64", "2001:db8::/32", "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)]


def embedded_ipv4(address) -> list:
    """IPv4 addresses an IPv6 address carries and may route to (6to4, Teredo, NAT64)."""
    if address.version != 6:
        return []
    found = [address.sixtofour, *(address.teredo or ())]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def address_refusal(ip: str, allow_loopback: bool) -> Optional[str]:
    """Why openwit refuses to connect to `ip`, or None when it may."""
    address = ipaddress.ip_address(ip.split("%")[0])  # an IPv6 zone id does not change the address
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    for inner in embedded_ipv4(address):
        why = address_refusal(str(inner), allow_loopback)
        if why:
            return f"{why} (embedded in {address})"
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    for network in _DENIED_NETWORKS:
        if address.version == network.version and address in network:
            return f"in {network}"
    for kind in ("private", "link_local", "multicast", "reserved", "unspecified", "site_local"):
        if getattr(address, f"is_{kind}", False):
            return kind.replace("_", "-")
    return None if address.is_global else "not globally routable"


class SafeResolver(AbstractResolver):
    """Resolves, then refuses the host if any of its addresses is not allowed."""

    def __init__(self, allow_loopback: bool, lookup: Lookup = system_lookup):
        self.allow_loopback = allow_loopback
        self.lookup = lookup

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        addresses = await self.lookup(host, port)
        if not addresses:
            raise socket.gaierror(f"{host} has no address")
        for ip in addresses:
            why = address_refusal(ip, self.allow_loopback)
            if why:
                raise BlockedAddress(f"{host} resolves to {ip} ({why})")
        return [
            {"hostname": host, "host": ip, "port": port, "proto": 0, "flags": socket.AI_NUMERICHOST,
             "family": socket.AF_INET6 if ":" in ip else socket.AF_INET}
            for ip in addresses
        ]

    async def close(self) -> None:
        pass


def check_url(url: URL, allow_loopback: bool) -> Optional[Refusal]:
    """Scheme and IP-literal checks that must happen before any connection."""
    if url.scheme not in SCHEMES:
        # The read stage lets only http(s) in, so another scheme here came from a redirect.
        return Refusal("unsupported_redirect", f"{url.scheme or 'no'} scheme")
    if url.raw_user is not None or url.raw_password is not None:
        # aiohttp would send them as Basic auth; the detail never repeats them
        return Refusal("credentials_in_redirect", "the URL holds a user name or password; never sent")
    if not url.host:
        return Refusal("invalid_url", "no host")
    host = url.host
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        if _numeric_host(host):  # "127.1", "2130706433", "0x7f.1": C libraries read these as IPs
            return Refusal("blocked_address", f"{host} (non-canonical numeric address)")
        return None  # a name: SafeResolver checks what it resolves to
    why = address_refusal(host, allow_loopback)
    return Refusal("blocked_address", f"{url.host} ({why})") if why else None


def _numeric_host(host: str) -> bool:
    stripped = host.rstrip(".")
    if all(part.isdigit() or part.lower().startswith("0x") for part in stripped.split(".") if part):
        return True
    try:
        socket.inet_aton(stripped)
    except OSError:
        return False
    return True
