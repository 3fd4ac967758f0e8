"""Who a request comes from: the peer's address, or the client a trusted proxy names.

``X-Forwarded-For`` is a list each proxy appends its peer to, so only its right end
can be believed, and only as far as the proxies on it are ours: walking from the
right, the first address that is not a configured trusted proxy is the client. From
a peer that is not a trusted proxy, the header is ignored altogether.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    address = peer or "unknown"
    if not forwarded_for or not _is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _is_trusted(hop, trusted):
            return _canonical(hop) or address
        address = hop
    return address


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


def _canonical(address: str) -> str | None:
    """The address in one spelling; None if it is not an address at all."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
