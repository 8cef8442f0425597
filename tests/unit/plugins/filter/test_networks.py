"""invalid_networks returns what ipaddress cannot read as an address or a network, and refuses a lone string."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.pliers.deploy.plugins.filter.networks import FilterModule, invalid_networks

VALID = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1", "10.0.0.1/8", "fe80::1/64", "0.0.0.0/0"]
# Not an address: a word, bad colons, an octet or a prefix length out of range, a host name, blanks, an empty prefix.
INVALID = ["cafe", "::::", "999.1.1.1", "10.0.0.0/99", "2001:db8::/129", "lb.example.test", "", " 10.0.0.0/8", "1/"]


def test_addresses_and_networks_are_valid():
    assert invalid_networks(VALID) == []


@pytest.mark.parametrize("value", INVALID)
def test_what_is_not_an_address_or_a_network_is_returned(value):
    assert invalid_networks(["10.0.0.0/8", value]) == [value]


def test_every_invalid_entry_is_returned_in_order():
    values = ["lb.example.test", "10.0.0.0/8", "999.1.1.1", "2001:db8::/32", "cafe"]
    assert invalid_networks(values) == ["lb.example.test", "999.1.1.1", "cafe"]


# ip_network itself would read an int as an address (167772160 is 10.0.0.0): an entry must be text.
NOT_TEXT = [(42, "42"), (167772160, "167772160"), ({"a": 1}, "{'a': 1}"), (None, "None")]


@pytest.mark.parametrize(("value", "shown"), NOT_TEXT)
def test_entries_that_are_not_strings_are_invalid_and_shown_as_strings(value, shown):
    assert invalid_networks([value, "192.0.2.7"]) == [shown]


def test_a_tuple_or_a_set_is_a_list_too():
    assert invalid_networks(("10.0.0.0/8", "x")) == ["x"]
    assert invalid_networks({"x"}) == ["x"]


def test_nothing_is_no_invalid_entry():
    assert invalid_networks(None) == []
    assert invalid_networks([]) == []


@pytest.mark.parametrize("value", ["10.0.0.0/8", "lb.example.test", ""])
def test_a_string_is_refused(value):
    with pytest.raises(AnsibleFilterError, match="a list of addresses or CIDRs is expected.*got a string"):
        invalid_networks(value)


@pytest.mark.parametrize("value", [{"10.0.0.0/8": True}, 42])
def test_anything_else_but_a_list_is_refused(value):
    with pytest.raises(AnsibleFilterError, match="a list of addresses or CIDRs is expected"):
        invalid_networks(value)


def test_the_filter_is_exported():
    assert FilterModule().filters() == {"invalid_networks": invalid_networks}
