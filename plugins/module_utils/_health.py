# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP checks (private to this collection): an endpoint's status, JSON fields and body, as health_check polls them
and compose_rollout verifies the stack through its edge."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
import urllib.error
from urllib.parse import urlsplit

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

BODY_EXCERPT = 200


def dotted(document, path: str):
    """document's value at a dotted path, or a KeyError naming the missing part."""
    value = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(part)
        value = value[part]
    return value


def check_body(target: dict, body: str) -> str | None:
    """None when the body satisfies the target's json/body_regex expectations; else why not."""
    if target.get("json"):
        try:
            document = json.loads(body)
        except ValueError:
            return "body is not JSON"
        for path, expected in target["json"].items():
            try:
                seen = dotted(document, path)
            except KeyError:
                return f"JSON has no {path}"
            if str(seen) != str(expected):
                return f"JSON {path} is {seen!r}, expected {expected!r}"
    if target.get("body_regex") and not re.search(target["body_regex"], body):
        return f"body does not match {target['body_regex']!r}"
    return None


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the URL's address, presenting another name (SNI, and the certificate check): an edge reached by
    address answers only its server names, and Traefik's strict SNI refuses a handshake without one."""

    def __init__(self, address: str, port: int | None, name: str, **kwargs) -> None:
        super().__init__(address, port, **kwargs)
        self._name = name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._name)


def _get_as(url: str, name: str, timeout: float, validate_certs: bool) -> tuple[int, str]:
    """GET url from its address as the host name (the Host header, and SNI over HTTPS)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if not validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection = _NamedHTTPSConnection(parts.hostname, parts.port, name, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Host": name})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def check_http(target: dict, request_timeout: float, validate_certs: bool) -> tuple[bool, str]:
    try:
        if target.get("host"):
            status, body = _get_as(target["url"], target["host"], request_timeout, validate_certs)
        else:
            with open_url(target["url"], timeout=request_timeout, validate_certs=validate_certs) as response:
                status, body = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, UrlsConnectionError, http.client.HTTPException) as exc:
        return False, f"no answer: {getattr(exc, 'reason', exc)}"
    seen = f"HTTP {status} {body.strip()[:BODY_EXCERPT]}"
    if status != target["status"]:
        return False, f"expected HTTP {target['status']}, saw {seen}"
    problem = check_body(target, body)
    return (False, f"{problem}; saw {seen}") if problem else (True, seen)


def verify(targets: list[dict], timeout: float, interval: float = 1.0, request_timeout: float = 5.0,
           validate_certs: bool = True) -> list[str]:  # fmt: skip
    """Poll the HTTP targets until all pass in one round or timeout seconds pass; what still failed, by name."""
    deadline = time.monotonic() + timeout
    while True:
        failed = []
        for target in targets:
            ok, last = check_http(dict({"status": 200}, **target), request_timeout, validate_certs)
            if not ok:
                failed.append(f"{target.get('name') or target['url']}: {last}")
        if not failed or time.monotonic() >= deadline:
            return failed
        time.sleep(interval)
