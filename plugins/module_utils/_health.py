# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP checks (private to this collection): an endpoint's status, JSON fields and body, as health_check polls them
and compose_rollout verifies the stack through its edge."""

from __future__ import annotations

import json
import re
import time
import urllib.error

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


def check_http(target: dict, request_timeout: float, validate_certs: bool) -> tuple[bool, str]:
    try:
        with open_url(target["url"], timeout=request_timeout, validate_certs=validate_certs) as response:
            status, body = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, UrlsConnectionError) as exc:
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
