"""Fetch an image named by URL or S3 URI without becoming an SSRF proxy or an oracle.

Only what the model's config declares may be fetched (``inputs``): S3 objects under its listed
buckets and prefixes, and HTTPS URLs only if it allows them; anything else is refused before S3 or
the network is called. For a URL, the host is resolved once; if any address it resolves to is not
public (crossover_serving.addresses) nothing is connected to. The connection goes to the address that was
checked (no second DNS answer can swap it), TLS still verifies the host name, and redirects are
re-checked the same way. Each fetch ends at the request's deadline, however the origin sends: a
watchdog shuts the socket down at the deadline, so a status line or headers dripped a byte at a
time cannot outlast it. Errors name the rule a reference broke, never an address it resolved to.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from crossover_serving.addresses import IPAddress, is_public
from crossover_serving.deadline import Deadline
from crossover_serving.errors import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# RFC 3986's reserved and unreserved characters, and '%': what a request line may carry as is.
_URL_SAFE = "/%:@!$&'()*+,;=-._~?[]"


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched, and how much. The default accepts nothing: a model's config declares its
    inputs (``inputs.s3``, ``inputs.https``) and :meth:`for_inputs` turns them into a policy."""

    max_bytes: int = 6 * 1024 * 1024
    connect_timeout_s: float = 3.0
    total_timeout_s: float = 10.0  # one fetch's own limit, inside the request's deadline
    max_redirects: int = 3
    schemes: tuple[str, ...] = ()  # URL schemes accepted: ("https",) when inputs.https is true
    s3_prefixes: tuple[str, ...] = ()  # "bucket/" or "bucket/prefix/": the S3 objects requests may name
    # Test-only escape hatch: networks allowed despite being private/loopback. Empty in production.
    allowed_networks: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def for_inputs(cls, s3: Sequence[str], https: bool, **limits: Any) -> FetchPolicy:
        """The policy for a config's ``inputs``: ``s3`` entries are buckets or bucket/prefix/."""
        prefixes = tuple(p if p.endswith("/") else f"{p}/" for p in s3)
        return cls(schemes=("https",) if https else (), s3_prefixes=prefixes, **limits)


def resolve(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    """The one address to connect to, after checking every address the host resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InputError(f"cannot resolve host {host!r}", code="bad_url") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if not is_public(address) and not any(address in net for net in policy.allowed_networks):
            raise InputError(f"refusing to fetch from {host!r}: it resolves to an address that is not public "
                             "(loopback, private, link-local, reserved or one embedding such an address)",
                             status=403, code="forbidden_url")
    return addresses[0]


class _Watchdog:
    """Shuts a socket down when the deadline passes; a blocked read then returns at once.

    Per-read timeouts cannot bound a whole response: an origin sending one byte per read keeps every
    read short. Shutting down a duplicate of the descriptor ends the connection for every reader,
    TLS included, without racing the owner's close of the original."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._guard = sock.dup()
        self._timer = threading.Timer(max(0.0, deadline.remaining()), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):  # already closed by its owner
            self._guard.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
        self._guard.close()


class _Pinned(http.client.HTTPConnection):
    """HTTP to a pre-checked address, cut off at the deadline."""

    def __init__(self, host: str, address: IPAddress, port: int, deadline: Deadline, policy: FetchPolicy) -> None:
        super().__init__(host, port, timeout=max(0.001, min(policy.connect_timeout_s, deadline.remaining())))
        self._address, self._deadline = str(address), deadline
        self._watchdog: _Watchdog | None = None

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self._watchdog = _Watchdog(sock, self._deadline)
        return sock

    def connect(self) -> None:
        self.sock = self._open()

    def close(self) -> None:
        super().close()
        if self._watchdog is not None:
            self._watchdog.cancel()


class _PinnedHTTPS(_Pinned):
    """HTTPS to a pre-checked address, with SNI and certificate checks for the original host name."""

    default_port = 443

    def connect(self) -> None:
        self.sock = ssl.create_default_context().wrap_socket(self._open(), server_hostname=self.host)


def _read_capped(response: http.client.HTTPResponse, sock: socket.socket, policy: FetchPolicy,
                 deadline: Deadline) -> bytes:
    length = response.getheader("Content-Length", "")
    if length.isascii() and length.isdigit() and int(length) > policy.max_bytes:
        raise InputError(f"the image at the URL is {int(length):,} bytes; the limit is {policy.max_bytes:,}",
                         status=413, code="too_large")
    chunks: list[bytes] = []
    total = 0
    while True:
        if deadline.expired():
            raise TimeoutError
        sock.settimeout(min(deadline.remaining(), policy.connect_timeout_s))
        chunk = response.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > policy.max_bytes:
            raise InputError(f"the image at the URL is over the {policy.max_bytes:,}-byte limit",
                             status=413, code="too_large")
        chunks.append(chunk)


def _target(url: str, policy: FetchPolicy) -> tuple[str, str, int, str]:
    """(scheme, ASCII host, port, request target) of a URL that passes the policy's rules."""
    try:
        parts = urlsplit(url)
        port = parts.port
        # quote() encodes to UTF-8 and the host to IDNA: a lone surrogate or a label IDNA refuses raises
        # UnicodeError, a ValueError like urlsplit's own (an unclosed IPv6 bracket, a port that is not a number).
        path = quote(parts.path or "/", safe=_URL_SAFE) + (
            f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query else "")
        host = parts.hostname.encode("idna").decode("ascii") if parts.hostname else ""
    except ValueError as e:
        raise InputError(f"the URL is malformed ({type(e).__name__})", code="bad_url") from None
    if not policy.schemes:
        raise InputError("this model accepts no image URLs (its config's inputs.https is false): send the image "
                         "bytes, or an s3:// URI under inputs.s3", status=403, code="forbidden_url")
    if parts.scheme not in policy.schemes:
        raise InputError(f"refusing URL scheme {parts.scheme[:20]!r}; allowed: {', '.join(policy.schemes)}",
                         status=403, code="forbidden_url")
    if not host or parts.username or parts.password:
        raise InputError("the URL needs a host and must not carry credentials", code="bad_url")
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise InputError("the URL contains spaces or control characters", code="bad_url")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def fetch_url(url: str, policy: FetchPolicy, deadline: Deadline) -> bytes:
    for _ in range(policy.max_redirects + 1):
        scheme, host, port, target = _target(url, policy)
        if deadline.expired():
            raise InputError(f"the fetch did not finish within its {deadline.seconds:g} s deadline", status=504,
                             code="fetch_timeout")
        address = resolve(host, port, policy)
        connection = (_PinnedHTTPS if scheme == "https" else _Pinned)(host, address, port, deadline, policy)
        try:
            connection.request("GET", target, headers={"User-Agent": "crossover-serving", "Accept": "image/*"})
            sock = connection.sock  # getresponse() drops its reference when the origin will close
            assert sock is not None
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                try:
                    url = urljoin(url, response.getheader("Location", ""))
                except ValueError:  # "https://[x/": the origin's bytes, not ours
                    raise InputError("the origin redirected to a malformed URL", status=502,
                                     code="fetch_failed") from None
                continue
            if response.status != 200:
                raise InputError(f"the origin answered HTTP {response.status}", status=502, code="fetch_failed")
            return _read_capped(response, sock, policy, deadline)
        except (OSError, http.client.HTTPException) as e:  # TimeoutError is an OSError
            if deadline.expired() or isinstance(e, TimeoutError):
                raise InputError(f"the origin did not answer within the {deadline.seconds:g} s deadline",
                                 status=504, code="fetch_timeout") from None
            raise InputError(f"cannot fetch the URL ({type(e).__name__})", status=502, code="fetch_failed") from None
        finally:
            connection.close()
    raise InputError(f"more than {policy.max_redirects} redirects", status=502, code="fetch_failed")


def check_s3(uri: str, policy: FetchPolicy) -> tuple[str, str]:
    """The bucket and key of an S3 URI under one of the policy's declared prefixes."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise InputError(f"expected s3://bucket/key; got {uri[:300]!r}", code="bad_url")
    if not any(f"{bucket}/{key}".startswith(prefix) for prefix in policy.s3_prefixes):
        declared = ", ".join(policy.s3_prefixes) or "none"
        raise InputError(f"this model may not read {uri[:300]}: it is under none of the S3 inputs its config "
                         f"declares (inputs.s3: {declared})", status=403, code="forbidden_url")
    return bucket, key


def fetch_s3(uri: str, policy: FetchPolicy, deadline: Deadline) -> bytes:
    bucket, key = check_s3(uri, policy)
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    timeout = max(0.1, min(policy.connect_timeout_s, deadline.remaining()))
    client = boto3.client("s3", config=Config(connect_timeout=timeout, read_timeout=timeout,
                                              retries={"max_attempts": 2}))
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
        raise InputError(f"cannot read {uri}: {type(e).__name__}", status=502, code="fetch_failed") from None
    return data


def fetch(reference: str, policy: FetchPolicy, deadline: Deadline | None = None) -> bytes:
    """The bytes behind an ``https://`` URL or an ``s3://`` URI, by ``deadline`` at the latest (and
    within the policy's own ``total_timeout_s``)."""
    own = Deadline.after(policy.total_timeout_s)
    deadline = own if deadline is None or own.at < deadline.at else deadline
    if not reference.isascii():
        try:
            reference.encode()
        except UnicodeEncodeError:  # JSON can carry a lone surrogate ("\ud800"); no URL or key holds one
            raise InputError("the image reference is not valid Unicode", code="bad_url") from None
    if reference.startswith("s3://"):
        return fetch_s3(reference, policy, deadline)
    return fetch_url(reference, policy, deadline)


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v) for v in values)
