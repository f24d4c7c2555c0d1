"""Fetching by URL or S3 URI never becomes an SSRF proxy or an oracle: refusals happen before any
connection or S3 call is made, and every fetch ends at its deadline."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator

import boto3
import pytest

from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError
from crossover_serving.fetch import FetchPolicy, fetch
from tests.origin import origin

# Test-only: the local origin lives on 127.0.0.2 over plain HTTP. Production allows neither.
LOCAL = FetchPolicy(schemes=("https", "http"), allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),),
                    max_bytes=1024 * 1024, connect_timeout_s=0.5, total_timeout_s=1.5)
HTTPS = FetchPolicy.for_inputs([], https=True)  # what a config with inputs.https: true gets


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
        fetch(url, HTTPS)
    assert caught.value.status == 403 and connections == []


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://[::ffff:169.254.169.254]/",
    "https://2852039166/", "https://0xA9FEA9FE/", "https://0251.0376.0251.0376/",
    "https://127.0.0.1/", "https://localhost/", "https://[::1]/", "https://10.0.0.1/",
    "https://192.168.1.1/", "https://[fd00::1]/", "https://[fe80::1]/", "https://0.0.0.0/",
    "https://internal.example/cat.png",
])
def test_fails_when_host_is_not_public(url: str, connections: list[tuple[str, int]], fake_dns: None) -> None:
    with pytest.raises(InputError, match="resolves to an address that is not public") as caught:
        fetch(url, HTTPS)
    assert caught.value.status == 403
    assert connections == [], "a refused URL must not cause any outbound connection"
    # The answer names the rule, never what the host resolved to: no map of the internal network.
    assert "10.1.2.3" not in str(caught.value)


def test_loopback_is_refused_even_with_a_listener_there(photos: dict[str, bytes],
                                                        connections: list[tuple[str, int]]) -> None:
    # GIVEN a real server on 127.0.0.1 WHEN its URL is fetched under the default policy THEN it sees nothing
    with origin(photos["chelsea"], host="127.0.0.1") as (base, hits):
        with pytest.raises(InputError, match="not public"):
            fetch(base.replace("http://", "https://") + "/image", HTTPS)
        with pytest.raises(InputError):
            fetch(base + "/image", FetchPolicy(schemes=("https", "http")))
    assert hits == [] and connections == []


def _origin_address(base: str) -> tuple[str, int]:
    """The (address, port) a fetch from the origin at ``base`` (http://127.0.0.2:<port>) must connect to."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_allowed_origin_serves_the_image(photos: dict[str, bytes], connections: list[tuple[str, int]]) -> None:
    with origin(photos["chelsea"]) as (base, hits):
        assert fetch(base + "/image", LOCAL) == photos["chelsea"]
        assert fetch(f"{base}/redirect?to={base}/image", LOCAL) == photos["chelsea"]
    assert hits == ["/image", f"/redirect?to={base}/image", "/image"]
    # The spy sees what the fetcher really opens: one connection per request, each to the checked address and
    # port (so the assertions that a refused URL connects to nothing are not a spy that records nothing).
    assert connections == [_origin_address(base)] * 3


def test_fails_when_a_redirect_points_at_metadata(connections: list[tuple[str, int]]) -> None:
    with origin(b"") as (base, _hits), pytest.raises(InputError, match="not public"):
        fetch(f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/", LOCAL)
    assert connections == [_origin_address(base)]  # the origin's redirect, and nothing towards the metadata


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
        fetch("https://user:secret@example.com/x.png", HTTPS)


def test_fails_at_the_deadline_when_the_origin_drips_its_headers() -> None:
    # GIVEN an origin that sends its status line and headers a byte every 50 ms (each read is quick)
    started = time.monotonic()
    with origin(b"") as (base, _hits), pytest.raises(InputError) as caught:
        fetch(base + "/slow-headers", LOCAL)
    # THEN the fetch ends at its 1.5 s deadline, not when the origin stops (20 s)
    assert (caught.value.status, caught.value.code) == (504, "fetch_timeout")
    assert time.monotonic() - started < 3


def test_a_fetch_whose_deadline_has_passed_connects_to_nothing(connections: list[tuple[str, int]]) -> None:
    # A redirect hop that began after the deadline once passed a negative timeout to the socket (ValueError).
    with pytest.raises(InputError) as caught:
        fetch("https://example.com/cat.png", HTTPS, Deadline.after(-1))
    assert (caught.value.status, caught.value.code) == (504, "fetch_timeout") and connections == []


@pytest.mark.parametrize(("url", "why"), [
    ("https://[::1/cat.png", "malformed"), ("https://example.com:99999/x", "malformed"),
    ("https://example.com/a b.png", "spaces or control characters"),
    ("https://example.com/\x00.png", "spaces or control characters"),
])
def test_fails_with_a_4xx_on_a_malformed_url(url: str, why: str, connections: list[tuple[str, int]]) -> None:
    with pytest.raises(InputError, match=why) as caught:
        fetch(url, HTTPS)
    assert caught.value.status == 400 and connections == []


def test_a_path_that_is_not_ascii_is_sent_percent_encoded(photos: dict[str, bytes]) -> None:
    with origin(photos["chelsea"]) as (base, hits):
        assert fetch(base + "/image-ünïcode.png?size=größer", LOCAL) == photos["chelsea"]
    assert hits == ["/image-%C3%BCn%C3%AFcode.png?size=gr%C3%B6%C3%9Fer"]


def test_only_the_declared_inputs_are_fetched(monkeypatch: pytest.MonkeyPatch,
                                              connections: list[tuple[str, int]]) -> None:
    # GIVEN a model whose config declares one S3 prefix and no URLs
    def no_s3(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a refused reference must not reach S3")

    monkeypatch.setattr(boto3, "client", no_s3)
    policy = FetchPolicy.for_inputs(["my-images/team-a"], https=False)
    assert policy.s3_prefixes == ("my-images/team-a/",)
    # WHEN anything outside it is asked for THEN it is refused, naming the rule, before S3 or the network
    for uri in ("s3://other-bucket/cat.png", "s3://my-images/team-b/cat.png", "s3://my-images/team-a-cat.png"):
        with pytest.raises(InputError, match="under none of the S3 inputs its config declares") as caught:
            fetch(uri, policy)
        assert caught.value.status == 403
    with pytest.raises(InputError, match=r"accepts no image URLs \(its config's inputs.https is false\)"):
        fetch("https://example.com/cat.png", policy)
    assert connections == []
