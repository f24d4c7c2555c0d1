"""Spot interruptions, read from the instance metadata service (IMDSv2, which the launch template requires).

EC2 posts a *rebalance recommendation* when a spot instance is at elevated risk of interruption, and an
*instance action* two minutes before it stops or terminates one. :class:`SpotWatch` polls both and calls
``on_notice`` once, with what it read; the server then fails its readiness check so the load balancer drains
it, the worker stops taking messages. Off EC2 (no metadata service) it finds nothing and says so once.
"""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

IMDS = "http://169.254.169.254"
NOTICES = ("/latest/meta-data/spot/instance-action", "/latest/meta-data/events/recommendations/rebalance")
TOKEN_TTL_S = 21600


class SpotWatch:
    """Polls ``endpoint`` every ``interval_s`` on a daemon thread until a notice (or :meth:`stop`)."""

    def __init__(self, on_notice: Callable[[str], None], *, endpoint: str = IMDS, interval_s: float = 5.0) -> None:
        self.on_notice, self.endpoint, self.interval_s = on_notice, endpoint, interval_s
        self._stop = threading.Event()
        self._unreachable_said = False

    def start(self) -> SpotWatch:
        threading.Thread(target=self._run, name="spot-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> str | None:
        """One look: ``"<notice>: <document>"`` if EC2 posted one, else None."""
        try:
            token = self._call("/latest/api/token", method="PUT",
                               headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
            for path in NOTICES:
                try:
                    document = self._call(path, headers={"X-aws-ec2-metadata-token": token})
                except urllib.error.HTTPError as e:
                    if e.code == 404:  # nothing posted: the usual answer
                        continue
                    raise
                return f"{path.rsplit('/', 1)[-1]}: {document}"
        except (OSError, ValueError) as e:
            if not self._unreachable_said:
                print(f"spot-watch: no instance metadata at {self.endpoint} ({e}); watching on", file=sys.stderr,
                      flush=True)
                self._unreachable_said = True
        return None

    def _call(self, path: str, *, method: str = "GET", headers: dict[str, str]) -> str:
        request = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=2) as answer:
            return str(answer.read(4096).decode("utf-8", "replace"))

    def _run(self) -> None:
        while not self._stop.is_set():
            notice = self.check()
            if notice is not None:
                print(f"spot-watch: {notice}", file=sys.stderr, flush=True)
                self.on_notice(notice)
                return
            self._stop.wait(self.interval_s)
