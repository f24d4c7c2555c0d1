"""The public-address rule against Python's ipaddress, over every way IPv6 can carry an IPv4 address."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossover_serving.addresses import embedded_ipv4, is_public

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def _v4_public(address: V4) -> bool:
    return address.is_global and not address.is_multicast


# Non-public IPv4 from the ranges that matter (loopback, private, link-local/metadata, shared, reserved),
# and arbitrary ones, whose verdict comes from ipaddress itself.
interesting_v4 = st.sampled_from(["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                  "100.64.0.1", "0.0.0.0", "240.0.0.1", "224.0.0.1", "8.8.8.8"]).map(V4)
any_v4 = interesting_v4 | st.integers(0, 2**32 - 1).map(V4)


def embeddings(v4: V4) -> dict[str, V6]:
    """``v4`` written inside IPv6 in each of the forms an address classifier must unpack."""
    n = int(v4)
    return {
        "mapped": V6((0xFFFF << 32) | n),  # ::ffff:a.b.c.d
        "compatible": V6(n),  # ::a.b.c.d
        "translated": V6((0xFFFF << 48) | n),  # ::ffff:0:a.b.c.d (SIIT)
        "nat64": V6((0x64FF9B << 96) | n),  # 64:ff9b::a.b.c.d
        "6to4": V6((0x2002 << 112) | (n << 80) | 1),  # 2002:aabb:ccdd::1
        "teredo-server": V6((0x20010000 << 96) | (n << 64) | (0xFFFFFFFF ^ int(V4("8.8.4.4")))),
        "teredo-client": V6((0x20010000 << 96) | (int(V4("8.8.4.4")) << 64) | (0xFFFFFFFF ^ n)),
    }


@given(any_v4)
def test_every_embedding_of_a_non_public_ipv4_address_is_refused(v4: V4) -> None:
    for form, v6 in embeddings(v4).items():
        assert v4 in set(embedded_ipv4(v6)), f"{form}: {v6} hides {v4}"
        if not _v4_public(v4):
            assert not is_public(v6), f"{form}: {v6} embeds {v4}"


@given(any_v4)
def test_plain_ipv4_follows_ipaddress(v4: V4) -> None:
    assert is_public(v4) == _v4_public(v4)


@given(st.integers(0, 2**128 - 1).map(V6))
def test_ipv6_is_public_only_if_ipaddress_says_global_and_nothing_inside_is_private(v6: V6) -> None:
    verdict = is_public(v6)
    if verdict:
        assert v6.is_global and not v6.is_multicast
        assert all(_v4_public(v4) for v4 in embedded_ipv4(v6))
    elif not list(embedded_ipv4(v6)) and v6 not in ipaddress.ip_network("64:ff9b:1::/48"):
        assert not v6.is_global or v6.is_multicast


@pytest.mark.parametrize("text", ["::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1", "2002:7f00:1::",
                                  "2002:a9fe:a9fe::1", "64:ff9b:1::808:808", "::ffff:169.254.169.254", "fe80::1",
                                  "fc00::1", "ff02::1", "::", "::1"])
def test_the_forms_a_hostile_round_found_are_refused(text: str) -> None:
    assert not is_public(ipaddress.ip_address(text))


def test_a_public_ipv6_address_is_allowed() -> None:
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111")) and is_public(ipaddress.ip_address("1.1.1.1"))
