# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is wrong with an input, in words: each filter returns one sentence naming the variable, what it expects and
the bad value (quoted, truncated; never a secret's), '' when nothing is wrong - or a list of such sentences.

single_line_problems    values that must be one line (they are written into units and configuration files)
format_problem          a value in one of a few named formats (a systemd calendar spec, an nginx time, ...)
image_reference_problem an image reference, by the grammar of github.com/distribution/reference
port_problem            a TCP port, 1-65535
size_problem            a size in bytes as Docker (or Redis) writes it
resource_problems       a service's CPU and memory limits and reservations
url_problem             a URL, parsed: scheme, host, port, no password, no whitespace
type_problems           the lists and mappings of the roles' argument specs, really lists and mappings
declared_variables      the options the roles' argument specs declare
undeclared_variables    the variables with a role's prefix that no argument spec declares (typos?)
warn                    shows each message as a warning, and returns them
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display
from ansible_collections.pliers.deploy.plugins.filter.networks import is_address

# Newlines, carriage returns, tabs and every other C0 or C1 control character, and Unicode's line separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SHOWN_LENGTH = 60


def _shown(value) -> str:
    """The value as the sentence quotes it: a JSON string (a newline shows as \\n), truncated."""
    text = str(value)
    if len(text) > SHOWN_LENGTH:
        text = text[:SHOWN_LENGTH] + "..."
    return json.dumps(text)


def _text(value) -> str:
    return "" if value is None else str(value)


def _is_list(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


# --- One line -----------------------------------------------------------------------------------------------------


def _strings(value):
    """The strings a value writes: itself, or each entry of a list, or each key and value of a mapping."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif _is_list(value):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def single_line_problems(values, secret: bool = False) -> list[str]:
    """A sentence for each value (name: value) with a newline or another control character in it (in a list's entries
    or a mapping's keys and values too); [] when there is none. With secret, the values are not quoted."""
    if not isinstance(values, Mapping):
        raise AnsibleFilterError(f"single_line_problems: a mapping of names to values is expected, got {values!r}")
    problems = []
    for name, value in values.items():
        bad = next((text for text in _strings(value) if CONTROL.search(text)), None)
        if bad is not None:
            got = "a value with one (not shown)" if secret else _shown(bad)
            problems.append(
                f"{name} must be a single line, with no newline or other control character (it is written into a "
                f"configuration file), got {got}"
            )
    return problems


# --- Named formats ------------------------------------------------------------------------------------------------

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
# A host name, an IPv4 address or a bracketed IPv6 address: a URL's host.
_HOST_NAME = re.compile(_HOST, re.ASCII)


def _matches(pattern: str):
    """A check that text is all of pattern, and names a port from 1 to 65535 if pattern has a port group."""
    compiled = re.compile(pattern, re.ASCII)

    def check(text: str) -> bool:
        match = compiled.fullmatch(text)
        port = match.groupdict().get("port") if match else None
        return bool(match) and (port is None or 1 <= int(port) <= 65535)

    return check


# Each format: what checks a value (as text), and what the sentence says is expected.
FORMATS = {
    # systemd.time(7): weekdays, dates and times with * , - .. / ~ : and a time zone (Europe/Berlin, Etc/GMT+1), or a
    # shorthand (daily, weekly); nothing else a unit file reads (%, ;, \, quotes, a newline).
    "calendar": (
        _matches(r"[A-Za-z0-9*~](?:[A-Za-z0-9*,./:~_+ -]{0,126}[A-Za-z0-9*])?"),
        "a systemd calendar spec on one line (like *-*-* 03:15:00, Mon..Fri 02:00 or daily)",
    ),
    # nginx's time: 30s, 1m30s, 500ms, or seconds alone.
    "nginx_time": (
        _matches(r"[0-9]+|(?:[0-9]+(?:ms|s|m|h|d|w|M|y))+"),
        "a time as nginx reads it (like 30s, 1m30s or 500ms)",
    ),
    # What PostgreSQL takes unquoted as a role or database name.
    "identifier": (
        _matches(r"[a-z_][a-z0-9_]{0,62}"),
        "a lowercase identifier (letters, digits and _, at most 63, not starting with a digit)",
    ),
    # A Redis ACL user's name, as an ACL file takes it unquoted (and redis_access accepts it).
    "redis_user": (
        _matches(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
        "a Redis user name (letters, digits, '.', '_' and '-', at most 64, not starting with '.', '_' or '-')",
    ),
    # The official image's entrypoint evaluates POSTGRES_INITDB_ARGS in a shell: options and plain words only.
    "initdb_args": (
        _matches(r"-[A-Za-z0-9_.,/:=@+-]*(?: [A-Za-z0-9_.,/:=@+-]+)*"),
        "initdb options separated by single spaces (like --data-checksums --locale=C.UTF-8), with no shell character",
    ),
    # A network interface's name (Linux: at most 15 characters).
    "interface": (_matches(r"[A-Za-z0-9_.-]{1,15}"), "a network interface's name (like eth0)"),
    # host:port, as a mail server is named.
    "host_port": (_matches(rf"{_HOST}:(?P<port>[0-9]+)"), "host:port (a port from 1 to 65535)"),
    # A registry as the distribution reference grammar names it (the domain of an image reference).
    "registry": (
        _matches(rf"{_HOST}(?::(?P<port>[0-9]+))?"),
        "a registry host, with its port if not the default (registry.example.com:5000)",
    ),
    # A release's number, as a minimum version is compared with what a host reports.
    "version": (_matches(r"[0-9]+(?:\.[0-9]+){0,2}"), "a version of one to three numbers (like 25.0 or 2.18.0)"),
    # An address to bind: IPv4 or IPv6, as Python's ipaddress reads it.
    "address": (is_address, "an IPv4 or IPv6 address"),
}


def format_problem(value, name: str, kind: str, optional: bool = False) -> str:
    """'' when value is in the format named kind (FORMATS), or empty and optional; otherwise a sentence saying so."""
    if kind not in FORMATS:
        raise AnsibleFilterError(f"format_problem: unknown format {kind!r} (one of {', '.join(sorted(FORMATS))})")
    check, expected = FORMATS[kind]
    text = _text(value)
    if (text == "" and optional) or (not CONTROL.search(text) and check(text)):
        return ""
    return f"{name} must be {expected}{', or empty' if optional else ''}, got {_shown(text)}"


# --- Image references ---------------------------------------------------------------------------------------------

# github.com/distribution/reference's regexp.go, as Docker and every registry read a reference:
# [domain[:port]/]path-component[/path-component...][:tag][@algorithm:hex].
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_HOST})(?::(?P<port>[0-9]+))?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
NAME_TOTAL_LENGTH_MAX = 255
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def image_reference_problem(value, name: str) -> str:
    """'' when value is an image reference by the distribution grammar; otherwise a sentence saying what is expected."""
    text = _text(value)
    match = _REFERENCE.fullmatch(text)
    why = ""
    if not match:
        why = "lower-case path components separated by /, a tag of letters, digits, _ . and -"
    elif len(match["name"]) > NAME_TOTAL_LENGTH_MAX:
        why = f"a name of at most {NAME_TOTAL_LENGTH_MAX} characters"
    elif match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        why = "a registry port from 1 to 65535"
    elif match["digest"]:
        # The algorithms Docker knows (go-digest), each with its length.
        algorithm, hexadecimal = match["digest"].split(":", 1)
        if len(hexadecimal) != _DIGEST_LENGTHS.get(algorithm):
            why = "a digest sha256:<64 hex digits> (or sha384:<96>, sha512:<128>)"
    if not why:
        return ""
    return f"{name} must be an image reference, [registry[:port]/]path[:tag][@digest] ({why}), got {_shown(text)}"


# --- Ports, sizes, CPUs -------------------------------------------------------------------------------------------


def _port(value) -> int | None:
    """The port value names (an int, or digits: a leading zero is allowed, as int reads it), None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        return None
    return number if 1 <= number <= 65535 else None


def port_problem(value, name: str, optional: bool = False) -> str:
    """'' when value is a TCP port (1-65535), or empty (or null) and optional; otherwise a sentence saying so."""
    if optional and (value is None or value == ""):
        return ""
    if _port(value) is not None:
        return ""
    empty = ", or empty to publish nothing" if optional else ""
    return f"{name} must be a TCP port (1-65535){empty}, got {_shown(value)}"


_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
# Docker's units.RAMInBytes without the space it tolerates: 1024, 256M, 512m, 1gb, 1GiB, 1.5g (binary multiples).
_DOCKER_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?:(?P<unit>[kKmMgGtTpP])(?:[iI]?[bB])?|[bB])?", re.ASCII)
# redis.conf's memory units: 1024, 1k (1000), 1kb (1024), m, mb, g, gb, in any case; 0 is no limit.
_REDIS_SIZE = re.compile(r"(?P<number>[0-9]+)(?:(?P<unit>[kKmMgG])(?P<binary>[bB])?|[bB])?", re.ASCII)
SIZE_SYNTAXES = {
    "docker": "a size in bytes as Docker reads it (a number, or one with k, m, g, t or p and an optional b or ib: "
    "256M, 512m, 1gb, 1GiB)",
    "redis": "a size as redis.conf reads it (a number of bytes, or one with k, kb, m, mb, g or gb: 256mb)",
}


def _bytes(value, syntax: str = "docker") -> Decimal | None:
    """The number of bytes value names, or None when it names none (a bool, a negative number, a space ...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if value >= 0 else None
    match = (_REDIS_SIZE if syntax == "redis" else _DOCKER_SIZE).fullmatch(_text(value))
    if not match:
        return None
    unit = (match["unit"] or "").lower()
    # Docker's units are binary; redis.conf's are decimal unless followed by b (1k is 1000, 1kb 1024).
    base = 1000 if syntax == "redis" and not match["binary"] else 1024
    return Decimal(match["number"]) * base ** _UNITS[unit]


def size_problem(value, name: str, syntax: str = "docker") -> str:
    """'' when value is a size in bytes in the syntax (docker: more than 0; redis: 0 is no limit); else a sentence."""
    if syntax not in SIZE_SYNTAXES:
        raise AnsibleFilterError(f"size_problem: unknown syntax {syntax!r} (docker or redis)")
    size = _bytes(value, syntax)
    if size is not None and (size > 0 or syntax == "redis"):
        return ""
    return f"{name} must be {SIZE_SYNTAXES[syntax]}, got {_shown(value)}"


_CPUS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)


def _cpus(value) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = Decimal(str(value))
    elif _CPUS.fullmatch(_text(value)):
        try:
            number = Decimal(_text(value))
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() and number > 0 else None


def resource_problems(values) -> list[str]:
    """Sentences for the CPU (*_cpus: a positive decimal) and memory (*_memory: Docker's byte syntax) limits and
    reservations (name: value) that are not, and for a reservation (<x>_reserved_cpus, <x>_reserved_memory) above its
    limit (<x>_cpus, <x>_memory) when both are given; [] when there is none."""
    if not isinstance(values, Mapping):
        raise AnsibleFilterError(f"resource_problems: a mapping of names to values is expected, got {values!r}")
    problems = []
    parsed = {}
    for name, value in values.items():
        if name.endswith("_cpus"):
            parsed[name] = _cpus(value)
            if parsed[name] is None:
                problems.append(f"{name} must be a number of CPUs above 0 (like 0.5 or 2), got {_shown(value)}")
        elif name.endswith("_memory"):
            size = _bytes(value)
            parsed[name] = size if size else None
            if parsed[name] is None:
                problems.append(size_problem(value, name))
        else:
            raise AnsibleFilterError(f"resource_problems: {name} is neither a *_cpus nor a *_memory value")
    for name, reserved in parsed.items():
        for kind in ("cpus", "memory"):
            if not name.endswith(f"_reserved_{kind}"):
                continue
            limit_name = name.replace(f"_reserved_{kind}", f"_{kind}")
            limit = parsed.get(limit_name)
            if reserved is not None and limit is not None and reserved > limit:
                problems.append(
                    f"{name} ({values[name]}) must not be more than {limit_name} ({values[limit_name]}): a container "
                    "cannot reserve more than it may use"
                )
    return problems


# --- URLs ---------------------------------------------------------------------------------------------------------


def _url_host(netloc: str) -> str:
    """The host of a URL's netloc ([user@]host[:port]), an IPv6 address with its brackets."""
    host = netloc.rpartition("@")[2]
    return host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.partition(":")[0]


def _valid_port(parts) -> bool:
    try:
        return parts.port is None or 1 <= parts.port <= 65535
    except ValueError:
        return False


def url_problem(value, name: str, schemes=("https",), optional: bool = False, secret: bool = False) -> str:
    """'' when value is a URL of one of the schemes, parsed: a host, a valid port if any, no password, no whitespace
    or control character (or value is empty and optional); otherwise a sentence saying why, without the value when
    secret."""
    schemes = [schemes] if isinstance(schemes, str) else [str(scheme).lower() for scheme in schemes]
    text = _text(value)
    if text == "" and optional:
        return ""
    expected = " or ".join(f"{scheme}://" for scheme in schemes)
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if re.search(r"\s", text) or CONTROL.search(text):
        why = "it must not contain whitespace or a control character"
    elif parts is None:
        why = "it does not parse as one"
    elif parts.scheme.lower() not in schemes or not text.lower().startswith(f"{parts.scheme.lower()}://"):
        why = f"its scheme must be {' or '.join(schemes)}"
    elif parts.password is not None:
        why, secret = "it must not hold a password (user:password@)", True
    elif not _HOST_NAME.fullmatch(_url_host(parts.netloc)):
        why = "it must name a host"
    elif not _valid_port(parts):
        why = "its port must be a number from 1 to 65535"
    else:
        return ""
    got = "its value is not shown (it may hold a secret)" if secret else f"got {_shown(text)}"
    return f"{name} must be an {expected} URL: {why}; {got}"


# --- Argument specs -----------------------------------------------------------------------------------------------


def _options(specs) -> dict[str, dict]:
    """Every option the specs declare, by name: specs is a list of argument_specs.yml documents (or their
    argument_specs mappings), each of entry points with options."""
    if isinstance(specs, Mapping):
        specs = [specs]
    declared: dict[str, dict] = {}
    for document in specs or []:
        entries = document.get("argument_specs", document) if isinstance(document, Mapping) else None
        if not isinstance(entries, Mapping):
            raise AnsibleFilterError(f"an argument_specs document is expected, got {document!r}")
        for entry in entries.values():
            for option, spec in ((entry or {}).get("options") or {}).items():
                declared.setdefault(str(option), dict(spec or {}))
    return declared


def declared_variables(specs, types=None) -> list[str]:
    """The names of the options the argument specs declare (of one of types, when given), sorted."""
    if isinstance(types, str):
        types = [types]
    return sorted(name for name, spec in _options(specs).items() if types is None or spec.get("type", "str") in types)


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if _is_list(value):
        return "list"
    return type(value).__name__


def type_problems(values, specs) -> list[str]:
    """Sentences for the values (name: value) whose option the specs declare a list (type: list) or a mapping
    (type: dict) and that are not one, or whose entries are not of the declared elements; [] when there is none.

    An argument spec takes "a,b" for a list (and "k=v" for a dict) and converts it, but the role reads the variable as
    it was given: a string, whose characters it would iterate."""
    if not isinstance(values, Mapping):
        raise AnsibleFilterError(f"type_problems: a mapping of names to values is expected, got {values!r}")
    options = _options(specs)
    problems = []
    for name in sorted(values):
        spec = options.get(name, {})
        declared, value = spec.get("type"), values[name]
        shown = f" {_shown(value)}" if isinstance(value, (str, int, float)) and not spec.get("no_log") else ""
        if declared == "list" and not _is_list(value):
            problems.append(f"{name} must be a list ([a, b] in YAML, or one '- a' a line), got a {_kind(value)}{shown}")
        elif declared == "dict" and not isinstance(value, Mapping):
            problems.append(f"{name} must be a mapping ({{key: value}} in YAML), got a {_kind(value)}{shown}")
        elif declared == "list":
            elements = spec.get("elements", "raw")
            wrong = [entry for entry in value if isinstance(entry, Mapping) != (elements == "dict") or _is_list(entry)]
            if elements != "raw" and wrong:
                problems.append(f"{name} must list {elements} values, got a {_kind(wrong[0])} among them")
    return problems


def undeclared_variables(names, declared, prefixes, exclude=()) -> list[str]:
    """A sentence for each of names that starts with one of prefixes but is not declared (nor starts with _, nor
    matches one of the exclude patterns, fnmatch-style: pliers_lab_*), saying which declared name is close to it."""
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    declared = sorted(set(declared))
    sentences = []
    for name in sorted(set(names)):
        if (
            name.startswith("_")
            or not name.startswith(tuple(prefixes))
            or name in declared
            or any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)
        ):
            continue
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.8)
        meant = f"did you mean {close[0]}?" if close else "no role reads it"
        sentences.append(f"{name} is declared by no role of pliers.deploy ({meant})")
    return sentences


def warn(messages) -> list[str]:
    """Shows each message as a warning of the task that templates it; returns the messages."""
    messages = [messages] if isinstance(messages, str) else list(messages or [])
    display = Display()
    for message in messages:
        display.warning(str(message))
    return messages


class FilterModule:
    def filters(self):
        return {
            "single_line_problems": single_line_problems,
            "format_problem": format_problem,
            "image_reference_problem": image_reference_problem,
            "port_problem": port_problem,
            "size_problem": size_problem,
            "resource_problems": resource_problems,
            "url_problem": url_problem,
            "type_problems": type_problems,
            "declared_variables": declared_variables,
            "undeclared_variables": undeclared_variables,
            "warn": warn,
        }
