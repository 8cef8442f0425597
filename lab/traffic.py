"""Traffic through a stack's edge, for the lab tests and the bench: one request (`http`), a steady probe
(`Probe`) and an operator's client that reads and writes (`Client`), each in threads of its own.

Standard library only, like the rest of the lab."""

from __future__ import annotations

import functools
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

from lab.common import LabError

# Where https://<name>/ is served, and the only CA trusted for it (route_edge).
_EDGES: dict[str, tuple[str, ssl.SSLContext]] = {}


def route_edge(name: str, address: str, cafile: str) -> None:
    """Requests to https://<name>/ go to address, trusting only cafile (the lab's ACME root) and checking the name:
    the lab's names are in no DNS this machine asks."""
    _EDGES[name] = (address, ssl.create_default_context(cafile=cafile))


class _EdgeConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with the URL's name for SNI and the certificate check."""

    def __init__(self, host: str, *, address: str, **kwargs) -> None:
        super().__init__(host, **kwargs)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _EdgeHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        name = req.host.rsplit(":", 1)[0] if req.host.count(":") == 1 else req.host
        if name not in _EDGES:
            return super().https_open(req)
        address, context = _EDGES[name]
        return self.do_open(functools.partial(_EdgeConnection, address=address), req, context=context)


_OPENER = urllib.request.build_opener(_EdgeHandler())


def http(
    url: str, *, method: str = "GET", body: object = None, timeout: float = 5, headers_out: dict | None = None
) -> tuple[int, str]:
    """(status, body) of one request; HTTP errors are answers too, connection errors give status 0. headers_out, when
    given, receives the answer's headers (lowercased names)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - lab addresses only
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            if headers_out is not None:
                headers_out.update({name.lower(): value for name, value in response.headers.items()})
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        if headers_out is not None:
            headers_out.update({name.lower(): value for name, value in exc.headers.items()})
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


class Probe:
    """Requests through the edge at a steady rate in a background thread, counting what failed.

    A failure is any answer but 200, or no answer; each is kept (time, path, status, body) to be reported.
    """

    def __init__(self, base_url: str, paths: tuple[str, ...] = ("/api/health", "/ai/health", "/"), rate: float = 20):
        self.base_url = base_url
        self.paths = paths
        self.interval = 1 / rate
        self.sent = 0
        self.failures: list[tuple[float, str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            path = self.paths[self.sent % len(self.paths)]
            status, body = http(self.base_url + path, timeout=10)
            self.sent += 1
            if status != 200:
                self.failures.append((round(time.monotonic() - started, 2), path, status, body[:200]))
            # A steady rate: the next request is due interval after the previous one was due.
            time.sleep(max(0.0, started + self.sent * self.interval - time.monotonic()))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        return f"{self.sent} requests, {len(self.failures)} failed" + (
            f"; first failures: {self.failures[:5]}" if self.failures else ""
        )


class Client:
    """An operator's client through the edge, in two background threads: one reads (`/api/health`, `/ai/health`,
    `/` in turn, `read_rate` a second), one writes (`POST /api/items`, `write_rate` a second).

    Every failure is kept with the time its request was sent (seconds since the client started: a request sent
    once the service was back succeeds, however long an earlier one hung); every write the api acknowledged
    (a 2xx with the item's id) is kept by name, to be found again afterwards (`lost()`).
    """

    def __init__(self, base_url: str, tag: str, read_rate: float = 5, write_rate: float = 10,
                 paths=("/api/health", "/ai/health", "/")):  # fmt: skip
        self.base_url = base_url
        self.tag = tag
        self.paths = paths
        self.read_interval = 1 / read_rate
        self.write_interval = 1 / write_rate
        self.started = time.monotonic()
        self.reads = 0
        self.writes = 0
        self.read_failures: list[tuple[float, str, int, str]] = []
        self.write_failures: list[tuple[float, int, str]] = []
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def _paced(self, step, interval: float) -> None:
        """`step` every `interval` seconds; after a request that hung, the next one goes at once (no burst)."""
        count = 0
        due = time.monotonic()
        while not self._stop.is_set():
            step(count)
            count += 1
            due = max(due + interval, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))

    def _read(self) -> None:
        def read(count: int) -> None:
            path = self.paths[count % len(self.paths)]
            sent = self.now()
            status, body = http(self.base_url + path, timeout=10)
            self.reads += 1
            if status != 200:
                self.read_failures.append((sent, path, status, body[:200]))

        self._paced(read, self.read_interval)

    def _write(self) -> None:
        def write(count: int) -> None:
            name = f"{self.tag}-{count}"
            sent = self.now()
            status, body = http(self.base_url + "/api/items", method="POST", body={"name": name}, timeout=10)
            self.writes += 1
            if 200 <= status < 300 and '"id"' in body:
                self.acknowledged.append(name)
            else:
                self.write_failures.append((sent, status, body[:200]))

        self._paced(write, self.write_interval)

    def __enter__(self) -> Client:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def failures(self) -> list[float]:
        return sorted([f[0] for f in self.read_failures] + [f[0] for f in self.write_failures])

    def recovery(self, since: float) -> float:
        """Seconds from `since` to the last failed request after it (0.0 when none failed)."""
        after = [moment for moment in self.failures() if moment >= since]
        return round(after[-1] - since, 1) if after else 0.0

    def lost(self) -> list[str]:
        """The acknowledged writes the api no longer lists."""
        status, body = http(self.base_url + "/api/items", timeout=30)
        if status != 200:
            raise LabError(f"listing the items failed: {status} {body[:300]}")
        listed = {item["name"] for item in json.loads(body)}
        return [name for name in self.acknowledged if name not in listed]

    def summary(self) -> str:
        return (
            f"reads {len(self.read_failures)}/{self.reads} failed, writes {len(self.write_failures)}/{self.writes} "
            f"failed ({len(self.acknowledged)} acknowledged)"
            + (f"; first failures: {(self.read_failures + self.write_failures)[:4]}" if self.failures() else "")
        )
