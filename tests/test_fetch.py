"""Fetching by URL never becomes an SSRF proxy: refusals happen before any connection is made."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from serving.errors import InputError
from serving.fetch import FetchPolicy, fetch
from tests.origin import origin

# Test-only: the local origin lives on 127.0.0.2 over plain HTTP. Production allows neither.
LOCAL = FetchPolicy(schemes=("https", "http"), allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),),
                    max_bytes=1024 * 1024, connect_timeout_s=0.5, total_timeout_s=1.5)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every outbound TCP connection attempted while the test runs."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def counting(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        made.append(address)
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", counting)
    yield made


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """internal.example resolves to a private address; everything else resolves normally."""
    real = socket.getaddrinfo

    def resolver(host: str, *args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
        if host == "internal.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 443))]
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/x.png", "gopher://127.0.0.1:25/",
    "http://example.com/cat.png",  # plain HTTP is refused by default
])
def test_fails_when_scheme_is_not_https(url: str, connections: list[tuple[str, int]]) -> None:
    with pytest.raises(InputError, match="refusing URL scheme") as caught:
        fetch(url)
    assert caught.value.status == 403 and connections == []


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://[::ffff:169.254.169.254]/",
    "https://2852039166/", "https://0xA9FEA9FE/", "https://0251.0376.0251.0376/",
    "https://127.0.0.1/", "https://localhost/", "https://[::1]/", "https://10.0.0.1/",
    "https://192.168.1.1/", "https://[fd00::1]/", "https://[fe80::1]/", "https://0.0.0.0/",
    "https://internal.example/cat.png",
])
def test_fails_when_host_is_not_public(url: str, connections: list[tuple[str, int]], fake_dns: None) -> None:
    with pytest.raises(InputError, match="resolves to the non-public address") as caught:
        fetch(url)
    assert caught.value.status == 403
    assert connections == [], "a refused URL must not cause any outbound connection"


def test_loopback_is_refused_even_with_a_listener_there(photos: dict[str, bytes],
                                                        connections: list[tuple[str, int]]) -> None:
    # GIVEN a real server on 127.0.0.1 WHEN its URL is fetched under the default policy THEN it sees nothing
    with origin(photos["chelsea"], host="127.0.0.1") as (base, hits):
        with pytest.raises(InputError, match=r"non-public address 127\.0\.0\.1"):
            fetch(base.replace("http://", "https://") + "/image")
        with pytest.raises(InputError):
            fetch(base + "/image", FetchPolicy(schemes=("https", "http")))
    assert hits == [] and connections == []


def test_allowed_origin_serves_the_image(photos: dict[str, bytes]) -> None:
    with origin(photos["chelsea"]) as (base, hits):
        assert fetch(base + "/image", LOCAL) == photos["chelsea"]
        assert fetch(f"{base}/redirect?to={base}/image", LOCAL) == photos["chelsea"]
    assert hits == ["/image", f"/redirect?to={base}/image", "/image"]


def test_fails_when_a_redirect_points_at_metadata(connections: list[tuple[str, int]]) -> None:
    with origin(b"") as (base, _hits), pytest.raises(InputError, match=r"non-public address 169\.254\.169\.254"):
        fetch(f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/", LOCAL)
    assert all(host == "127.0.0.2" for host, _ in connections)


def test_fails_when_the_origin_drips_slowly() -> None:
    with origin(b"") as (base, _hits), pytest.raises(InputError, match="did not") as caught:
        fetch(base + "/slow", LOCAL)
    assert caught.value.status == 504


def test_fails_when_the_origin_never_ends() -> None:
    with origin(b"") as (base, _hits), pytest.raises(InputError, match="over the 1,048,576-byte limit") as caught:
        fetch(base + "/endless", LOCAL)
    assert caught.value.status == 413


def test_fails_when_the_origin_announces_too_much() -> None:
    with origin(b"") as (base, _hits), pytest.raises(InputError, match="10,000,000,000 bytes") as caught:
        fetch(base + "/huge", LOCAL)
    assert caught.value.status == 413


def test_fails_when_url_carries_credentials() -> None:
    with pytest.raises(InputError, match="must not carry credentials"):
        fetch("https://user:secret@example.com/x.png")
