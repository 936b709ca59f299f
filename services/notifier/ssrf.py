"""The SSRF guard: a webhook may only reach public addresses, unless an allowlisted network holds the address.

Every address the host resolves to is checked (one private answer refuses the URL: DNS may hand out either).
The check happens just before connecting; a resolver that changes its answer in between (DNS rebinding) is not
covered here; a proxy that pins the checked address would be the next step.
"""
import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Iterable

__all__ = ["TargetRefused", "check_addresses", "check_url"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(ValueError):
    """The URL may not be called: the reason says which address or rule refused it."""


def check_addresses(host: str, addresses: Iterable[Address], allowlist: Iterable[Network]) -> None:
    """Raise TargetRefused unless every address is global (public) or inside an allowlisted network."""
    allowed = list(allowlist)
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if address.is_global and not address.is_multicast:
            continue
        if any(address in network for network in allowed):
            continue
        kind = next((name for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved")
                     if getattr(address, f"is_{name}")), "non-public")
        raise TargetRefused(f"{host} resolves to {address}, a {kind.replace('_', '-')} address; webhooks may only "
                            "reach public addresses unless the network is in OCRSTREAM_WEBHOOK_ALLOWLIST")


async def check_url(url: str, allowlist: Iterable[Network]) -> None:
    """Resolve the URL's host and check every address it resolves to. Raises TargetRefused."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TargetRefused(f"{url!r} is not an absolute http(s) URL")
    host = parsed.hostname
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        # A resolver failure (socket.gaierror, an OSError) may pass: the caller retries it like a refused connection.
        infos = await asyncio.get_running_loop().getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    check_addresses(host, addresses, allowlist)
