"""Which IP addresses a fetch may connect to: public unicast only, however the address is written.

An IPv6 address can carry an IPv4 address inside it (IPv4-mapped, IPv4-compatible, SIIT-translated,
NAT64, 6to4, Teredo). Each embedding is unpacked and the IPv4 address inside it judged on its own,
so that ``::7f00:1`` or ``64:ff9b::a9fe:a9fe`` is refused like ``127.0.0.1`` or ``169.254.169.254``
whatever the interpreter's own ``ipaddress`` tables say about the IPv6 range. NAT64's local-use
prefix is refused outright: what its addresses reach depends on a translator in the local network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 IPv4-compatible (deprecated; still routable by some stacks)
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 SIIT IPv4-translated
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use prefix


def embedded_ipv4(address: ipaddress.IPv6Address) -> Iterator[ipaddress.IPv4Address]:
    """Every IPv4 address that ``address`` carries."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        yield address.ipv4_mapped
    if address in _COMPATIBLE or address in _TRANSLATED or address in _NAT64:
        yield low32
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield from address.teredo  # the Teredo server and the (de-obfuscated) client


def is_public(address: IPAddress) -> bool:
    """True only for global unicast addresses whose embedded IPv4 addresses are global unicast too."""
    if isinstance(address, ipaddress.IPv6Address) and (
            address in _NAT64_LOCAL or not all(is_public(v4) for v4 in embedded_ipv4(address))):
        return False
    return address.is_global and not address.is_multicast
