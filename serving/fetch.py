"""Fetch an image named by URL or S3 URI without becoming an SSRF proxy.

HTTPS (and ``s3://``) only. The host is resolved once; if any address it resolves to is private,
loopback, link-local (instance metadata), multicast, reserved, unique-local or an IPv4-mapped form of
those, nothing is connected to. The connection goes to the address that was checked (no second DNS
answer can swap it), TLS still verifies the host name, redirects are re-checked the same way, and a
connect timeout, a total deadline and a streamed byte cap bound every fetch.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from serving.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 6 * 1024 * 1024
    connect_timeout_s: float = 3.0
    total_timeout_s: float = 10.0
    max_redirects: int = 3
    schemes: tuple[str, ...] = ("https",)
    # Test-only escape hatch: networks allowed despite being private/loopback. Empty in production.
    allowed_networks: tuple[Network, ...] = field(default_factory=tuple)


def _refused(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _refused(address.ipv4_mapped)
    return not address.is_global or address.is_multicast


def resolve(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    """The one address to connect to, after checking every address the host resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"cannot resolve host {host!r}: {e}", code="bad_url") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if _refused(address) and not any(address in net for net in policy.allowed_networks):
            raise InputError(f"refusing to fetch from {host!r}: it resolves to the non-public address {address}",
                             status=403, code="forbidden_url")
    return addresses[0]


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a pre-checked address, with SNI and certificate checks for the original host name."""

    def __init__(self, host: str, address: IPAddress, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = str(address)

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: IPAddress, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = str(address)

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _read_capped(response: http.client.HTTPResponse, sock: socket.socket, policy: FetchPolicy,
                 deadline: float) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
        raise InputError(f"the image at the URL is {int(length):,} bytes; the limit is {policy.max_bytes:,}",
                         status=413, code="too_large")
    chunks: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InputError(f"the origin did not finish sending within {policy.total_timeout_s:g} s",
                             status=504, code="fetch_timeout")
        # Each read waits at most what is left of the deadline: a slow drip cannot outlast it.
        sock.settimeout(min(remaining, policy.connect_timeout_s))
        chunk = response.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > policy.max_bytes:
            raise InputError(f"the image at the URL is over the {policy.max_bytes:,}-byte limit",
                             status=413, code="too_large")
        chunks.append(chunk)


def fetch_url(url: str, policy: FetchPolicy = FetchPolicy()) -> bytes:
    deadline = time.monotonic() + policy.total_timeout_s
    for _ in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in policy.schemes:
            raise InputError(f"refusing URL scheme {parts.scheme!r}; allowed: {', '.join(policy.schemes)} and s3",
                             status=403, code="forbidden_url")
        if not parts.hostname or parts.username or parts.password:
            raise InputError("the URL needs a host and must not carry credentials", code="bad_url")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InputError(f"the URL has an invalid port: {url!r}", code="bad_url") from None
        address = resolve(parts.hostname, port, policy)
        kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        connection = kind(parts.hostname, address, port, min(policy.connect_timeout_s, deadline - time.monotonic()))
        try:
            connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                               headers={"User-Agent": "crossover-serving", "Accept": "image/*"})
            sock = connection.sock  # getresponse() drops its reference when the origin will close
            assert sock is not None
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location", ""))
                continue
            if response.status != 200:
                raise InputError(f"the origin answered HTTP {response.status}", status=502, code="fetch_failed")
            return _read_capped(response, sock, policy, deadline)
        except TimeoutError:
            raise InputError(f"the origin did not answer within the time limit ({policy.total_timeout_s:g} s)",
                             status=504, code="fetch_timeout") from None
        except (OSError, http.client.HTTPException) as e:
            raise InputError(f"cannot fetch the URL: {e}", status=502, code="fetch_failed") from None
        finally:
            connection.close()
    raise InputError(f"more than {policy.max_redirects} redirects", status=502, code="fetch_failed")


def fetch_s3(uri: str, policy: FetchPolicy = FetchPolicy()) -> bytes:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise InputError(f"expected s3://bucket/key; got {uri!r}", code="bad_url")
    client = boto3.client("s3", config=Config(connect_timeout=policy.connect_timeout_s,
                                              read_timeout=policy.total_timeout_s, retries={"max_attempts": 2}))
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        if obj["ContentLength"] > policy.max_bytes:
            raise InputError(f"{uri} is {obj['ContentLength']:,} bytes; the limit is {policy.max_bytes:,}",
                             status=413, code="too_large")
        data: bytes = obj["Body"].read(policy.max_bytes + 1)
    except ClientError as e:
        raise InputError(f"cannot read {uri}: {e.response['Error'].get('Code', 'error')}", status=502,
                         code="fetch_failed") from None
    except BotoCoreError as e:
        raise InputError(f"cannot read {uri}: {e}", status=502, code="fetch_failed") from None
    return data


def fetch(reference: str, policy: FetchPolicy = FetchPolicy()) -> bytes:
    """The bytes behind an ``https://`` URL or an ``s3://`` URI."""
    if reference.startswith("s3://"):
        return fetch_s3(reference, policy)
    return fetch_url(reference, policy)


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v) for v in values)
