# Copyright (c) pliers.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""invalid_networks: the entries of a list that are not an IPv4/IPv6 address or network (CIDR), as Python's
ipaddress module reads them."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence, Set

from ansible.errors import AnsibleFilterError


def is_address(text: str) -> bool:
    """Whether text is an IPv4 or IPv6 address (a host name is not)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_network(value) -> bool:
    """Whether value is text naming an address or a network (host bits allowed: 10.0.0.1/8 is 10.0.0.0/8)."""
    if not isinstance(value, str):
        # ip_network would take an int (or packed bytes) as an address: an inventory's 42 is no address.
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def invalid_networks(values) -> list[str]:
    """The entries of values (as strings, in order) that are not an address or a CIDR; [] when values is None.

    AnsibleFilterError when values is a string or anything else that is not a list.
    """
    if values is None:
        return []
    if isinstance(values, (str, bytes)):
        raise AnsibleFilterError(
            f"invalid_networks: a list of addresses or CIDRs is expected (e.g. ['{values!s}']), got a string"
        )
    if isinstance(values, Mapping) or not isinstance(values, (Sequence, Set)):
        raise AnsibleFilterError(
            f"invalid_networks: a list of addresses or CIDRs is expected, got {type(values).__name__}"
        )
    return [str(value) for value in values if not _is_network(value)]


class FilterModule:
    def filters(self):
        return {"invalid_networks": invalid_networks}
