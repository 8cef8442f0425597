"""certificate_problems reads a PEM chain and its key on the controller; a problem names the variable, never the key."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.pliers.deploy.plugins.filter import tls
from ansible_collections.pliers.deploy.plugins.filter.tls import FilterModule, certificate_problems
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

UTC = timezone.utc  # noqa: UP017 - the same spelling as the plugin's
NOW = datetime.now(UTC)
CERT, KEY = "pliers_tls_certificate", "pliers_tls_key"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def certificate(
    key,
    dns=("example.com",),
    ips=(),
    cn="example.com",
    san=True,
    not_before=None,
    not_after=None,
    issuer=None,
    ca=False,
):
    """A certificate for key: self-signed, or signed by issuer (a (certificate, key) pair)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        entries = [x509.DNSName(name) for name in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def pem(*certificates) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def key_pem(key, encryption=None, format_=serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, format_, encryption or serialization.NoEncryption()).decode()


def body_lines(text: str) -> list[str]:
    """The base64 lines of a PEM text (what must never appear in a problem)."""
    return [line for line in text.splitlines() if line and not line.startswith("-----")]


@pytest.fixture(scope="module")
def rsa_pair():
    key = rsa_key()
    return certificate(key, dns=("example.com", "www.example.com")), key


@pytest.fixture(scope="module")
def ca():
    key = ec_key()
    return certificate(key, dns=(), cn="Pliers Test CA", san=False, ca=True), key


@pytest.fixture(scope="module")
def ec_leaf(ca):
    key = ec_key()
    return certificate(key, dns=("api.example.com",), cn="api.example.com", issuer=ca), key


# Usable certificates.


def test_self_signed_rsa_certificate_with_its_key_has_no_problem(rsa_pair):
    leaf, key = rsa_pair
    assert certificate_problems(pem(leaf), key_pem(key), ["example.com", "www.example.com"]) == []


def test_ca_signed_ec_leaf_with_its_chain_has_no_problem(ec_leaf, ca):
    leaf, key = ec_leaf
    assert certificate_problems(pem(leaf, ca[0]), key_pem(key), ["api.example.com"]) == []


@pytest.mark.parametrize("format_", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_pkcs8_and_traditional_keys_are_read(rsa_pair, format_):
    leaf, key = rsa_pair
    assert certificate_problems(pem(leaf), key_pem(key, format_=format_), []) == []


def test_bytes_crlf_and_text_around_the_blocks_are_accepted(rsa_pair):
    leaf, key = rsa_pair
    text = "subject=CN = example.com\n" + pem(leaf).replace("\n", "\r\n")
    assert certificate_problems(text.encode(), key_pem(key).encode(), ["example.com"]) == []


def test_no_names_means_no_name_is_checked(rsa_pair):
    leaf, key = rsa_pair
    assert certificate_problems(pem(leaf), key_pem(key), []) == []
    assert certificate_problems(pem(leaf), key_pem(key), None) == []


# Names.


@pytest.fixture(scope="module")
def wildcard():
    key = ec_key()
    return certificate(key, dns=("example.com", "*.api.example.com")), key


@pytest.mark.parametrize("name", ["a.api.example.com", "A.API.Example.COM", "api-1.api.example.com", "example.com."])
def test_a_wildcard_covers_one_left_most_label(wildcard, name):
    leaf, key = wildcard
    assert certificate_problems(pem(leaf), key_pem(key), [name]) == []


@pytest.mark.parametrize("name", ["api.example.com", "a.b.api.example.com", "www.example.com", "example.org"])
def test_a_wildcard_covers_nothing_else(wildcard, name):
    leaf, key = wildcard
    assert certificate_problems(pem(leaf), key_pem(key), [name]) == [
        f"{CERT} does not cover {name} (it covers example.com, *.api.example.com)"
    ]


def test_uncovered_names_come_in_the_order_given_once_each(rsa_pair):
    leaf, key = rsa_pair
    problems = certificate_problems(
        pem(leaf), key_pem(key), ["b.example.com", "example.com", "a.example.com", "b.example.com"]
    )
    assert [p.split(" (", maxsplit=1)[0] for p in problems] == [
        f"{CERT} does not cover b.example.com",
        f"{CERT} does not cover a.example.com",
    ]


@pytest.fixture(scope="module")
def ip_pair():
    key = ec_key()
    return certificate(key, dns=("edge.internal",), ips=("10.0.0.5", "2001:db8::1")), key


@pytest.mark.parametrize("name", ["10.0.0.5", "2001:db8::1", "[2001:db8::1]", "2001:DB8:0::1", "edge.internal"])
def test_ip_addresses_are_matched_against_ip_entries(ip_pair, name):
    leaf, key = ip_pair
    assert certificate_problems(pem(leaf), key_pem(key), [name]) == []


def test_an_ip_address_not_in_the_certificate_is_named(ip_pair):
    leaf, key = ip_pair
    assert certificate_problems(pem(leaf), key_pem(key), ["10.0.0.6"]) == [
        f"{CERT} does not cover 10.0.0.6 (it covers edge.internal, 10.0.0.5, 2001:db8::1)"
    ]


def test_an_ip_address_is_not_covered_by_a_dns_name_that_spells_it():
    key = ec_key()
    leaf = certificate(key, dns=("10.0.0.5",))
    assert certificate_problems(pem(leaf), key_pem(key), ["10.0.0.5"]) == [
        f"{CERT} does not cover 10.0.0.5 (it covers 10.0.0.5)"
    ]


def test_without_a_subject_alt_name_the_common_name_covers_dns_names_only():
    key = ec_key()
    leaf = certificate(key, cn="legacy.example.com", san=False)
    assert certificate_problems(pem(leaf), key_pem(key), ["LEGACY.example.com"]) == []
    assert certificate_problems(pem(leaf), key_pem(key), ["www.example.com"]) == [
        f"{CERT} does not cover www.example.com (it has no subjectAltName; its subject CN is legacy.example.com)"
    ]


def test_with_a_subject_alt_name_the_common_name_is_ignored():
    key = ec_key()
    leaf = certificate(key, dns=("www.example.com",), cn="legacy.example.com")
    assert certificate_problems(pem(leaf), key_pem(key), ["legacy.example.com"]) == [
        f"{CERT} does not cover legacy.example.com (it covers www.example.com)"
    ]


def test_a_long_list_of_covered_names_is_cut_short():
    key = ec_key()
    leaf = certificate(key, dns=[f"n{i}.example.com" for i in range(15)])
    (problem,) = certificate_problems(pem(leaf), key_pem(key), ["other.example.com"])
    assert problem.endswith("n9.example.com and 5 more)")


# Validity.


def test_an_expired_certificate_says_when_it_expired():
    key = ec_key()
    end = datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
    leaf = certificate(key, not_before=end - timedelta(days=90), not_after=end)
    assert certificate_problems(pem(leaf), key_pem(key), ["example.com"]) == [f"{CERT} expired on 2024-01-31T12:00:00Z"]


def test_a_certificate_that_ends_now_counts_as_expired():
    key = ec_key()
    leaf = certificate(key, not_after=datetime.now(UTC).replace(microsecond=0))
    (problem,) = certificate_problems(pem(leaf), key_pem(key), [])
    assert problem.startswith(f"{CERT} expired on ")


def test_a_certificate_not_yet_valid_says_from_when():
    key = ec_key()
    start = datetime(2999, 6, 1, tzinfo=UTC)
    leaf = certificate(key, not_before=start, not_after=start + timedelta(days=90))
    assert certificate_problems(pem(leaf), key_pem(key), []) == [f"{CERT} is not valid before 2999-06-01T00:00:00Z"]


def test_only_the_leaf_dates_count(ec_leaf):
    key = ec_key()
    old_ca = certificate(
        key, san=False, ca=True, not_before=datetime(2000, 1, 1, tzinfo=UTC), not_after=datetime(2001, 1, 1, tzinfo=UTC)
    )
    leaf, leaf_key = ec_leaf
    assert certificate_problems(pem(leaf, old_ca), key_pem(leaf_key), []) == []


def test_naive_dates_of_an_older_cryptography_are_read_as_utc():
    naive = SimpleNamespace(not_valid_after=datetime(2024, 1, 31, 12, 0))  # what older releases give: naive, in UTC
    assert tls._utc(naive, "not_valid_after") == datetime(2024, 1, 31, 12, 0, tzinfo=UTC)


# The key.


def test_a_key_of_another_certificate_does_not_match(rsa_pair):
    leaf = rsa_pair[0]
    assert certificate_problems(pem(leaf), key_pem(rsa_key()), []) == [f"{KEY} does not match {CERT}"]


def test_a_key_of_another_type_does_not_match(rsa_pair):
    leaf = rsa_pair[0]
    assert certificate_problems(pem(leaf), key_pem(ec_key()), []) == [f"{KEY} does not match {CERT}"]


def test_a_chain_in_the_wrong_order_is_recognised(ec_leaf, ca):
    leaf, key = ec_leaf
    assert certificate_problems(pem(ca[0], leaf), key_pem(key), []) == [
        f"{KEY} does not match {CERT} (it matches certificate 2 of the chain: put the server's certificate first)"
    ]


@pytest.mark.parametrize("format_", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_an_encrypted_key_cannot_be_read_by_the_edge(rsa_pair, format_):
    leaf, key = rsa_pair
    encrypted = key_pem(key, serialization.BestAvailableEncryption(b"a passphrase"), format_)
    assert certificate_problems(pem(leaf), encrypted, []) == [
        f"{KEY} is encrypted with a passphrase, which the edge cannot read (decrypt it before vaulting it)"
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        "not a key at all",
        "-----BEGIN PRIVATE KEY-----\nTm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n",
    ],
)
def test_a_key_that_does_not_parse_is_named_without_its_text(rsa_pair, garbage):
    leaf = rsa_pair[0]
    assert certificate_problems(pem(leaf), garbage, []) == [f"{KEY} does not parse as a PEM private key"]


def test_a_damaged_real_key_is_never_echoed(rsa_pair):
    leaf, key = rsa_pair
    text = key_pem(key)
    lines = text.splitlines()
    damaged = "\n".join(lines[:5] + ["!!!"] + lines[6:])
    problems = certificate_problems(pem(leaf), damaged, ["example.com"])
    assert problems == [f"{KEY} does not parse as a PEM private key"]
    assert not any(line in problem for problem in problems for line in body_lines(text))


def test_a_certificate_given_as_the_key_is_named(rsa_pair):
    leaf = rsa_pair[0]
    assert certificate_problems(pem(leaf), pem(leaf), []) == [
        f"{KEY} does not parse as a PEM private key (it holds a CERTIFICATE block)"
    ]


def test_a_key_given_as_the_certificate_is_named_without_its_text(rsa_pair):
    leaf, key = rsa_pair
    problems = certificate_problems(key_pem(key), key_pem(key), [])
    assert problems == [f"{CERT} does not parse as a PEM certificate (it is a PRIVATE KEY block)"]
    assert not any(line in problems[0] for line in body_lines(key_pem(key)))


# The certificate's text and the chain.


@pytest.mark.parametrize(
    "garbage",
    [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    ],
)
def test_a_certificate_that_does_not_parse_is_named(rsa_pair, garbage):
    key = rsa_pair[1]
    (problem,) = certificate_problems(garbage, key_pem(key), ["example.com"])
    assert problem.startswith(f"{CERT} does not parse as a PEM certificate")


def test_a_chain_with_a_garbage_second_block_names_the_block(ec_leaf):
    leaf, key = ec_leaf
    chain = pem(leaf) + "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    assert certificate_problems(chain, key_pem(key), ["api.example.com"]) == [
        f"{CERT}: certificate 2 of the chain does not parse as a PEM certificate"
    ]


def test_a_chain_cut_short_names_the_block(ec_leaf, ca):
    leaf, key = ec_leaf
    chain = pem(leaf) + pem(ca[0])[:120]
    assert certificate_problems(chain, key_pem(key), []) == [
        f"{CERT}: certificate 2 of the chain does not parse as a PEM certificate"
    ]


# Empty values and placeholders.


@pytest.mark.parametrize("empty", ["", "   \n", None])
def test_empty_values_are_named(empty):
    assert certificate_problems(empty, empty, ["example.com"]) == [
        f"{CERT} is empty or missing (set it in the inventory's vault)",
        f"{KEY} is empty or missing (set it in the inventory's vault)",
    ]


VAULT_EXAMPLE_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nCHANGE_ME\n-----END CERTIFICATE-----\n"
VAULT_EXAMPLE_KEY = "-----BEGIN PRIVATE KEY-----\nCHANGE_ME\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("certificate_text", "key_text"),
    [
        (VAULT_EXAMPLE_CERTIFICATE, VAULT_EXAMPLE_KEY),
        ("changeme", "replace-me"),
        ("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\n  example\n"),
    ],
)
def test_placeholders_are_named(certificate_text, key_text):
    assert certificate_problems(certificate_text, key_text, ["example.com"]) == [
        f"{CERT} still holds a placeholder value (replace it in the inventory's vault)",
        f"{KEY} still holds a placeholder value (replace it in the inventory's vault)",
    ]


# Order, names of the variables, types.


def test_problems_come_in_a_stable_order_and_name_the_variables_given(ca):
    key = ec_key()
    end = datetime(2024, 1, 31, tzinfo=UTC)
    leaf = certificate(key, dns=("old.example.com",), not_before=end - timedelta(days=1), not_after=end)
    chain = pem(leaf) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    arguments = (
        chain,
        key_pem(ec_key()),
        ["www.example.com", "old.example.com", "10.1.1.1"],
        "traefik_crt",
        "traefik_key",
    )
    expected = [
        "traefik_crt: certificate 2 of the chain does not parse as a PEM certificate",
        "traefik_key does not match traefik_crt",
        "traefik_crt expired on 2024-01-31T00:00:00Z",
        "traefik_crt does not cover www.example.com (it covers old.example.com)",
        "traefik_crt does not cover 10.1.1.1 (it covers old.example.com)",
    ]
    assert certificate_problems(*arguments) == expected
    assert certificate_problems(*arguments) == expected


def test_names_given_as_a_string_are_refused(rsa_pair):
    leaf, key = rsa_pair
    with pytest.raises(AnsibleFilterError, match="names must be a list of host names .*got a string"):
        certificate_problems(pem(leaf), key_pem(key), "example.com")


@pytest.mark.parametrize(
    ("names", "kind"), [({"example.com": 1}, "dict"), (443, "int"), (["example.com", 443], "item 2 is int")]
)
def test_names_of_other_types_are_refused(rsa_pair, names, kind):
    leaf, key = rsa_pair
    with pytest.raises(AnsibleFilterError, match=f"names must be a list of host names.*{kind}"):
        certificate_problems(pem(leaf), key_pem(key), names)


def test_a_certificate_given_as_a_list_is_refused(rsa_pair):
    leaf, key = rsa_pair
    with pytest.raises(AnsibleFilterError, match=f"{CERT} must be PEM text \\(a string\\), got a list"):
        certificate_problems([pem(leaf)], key_pem(key), [])


def test_a_key_given_as_a_mapping_is_refused(rsa_pair):
    leaf, key = rsa_pair
    with pytest.raises(AnsibleFilterError, match="traefik_key must be PEM text \\(a string\\), got a mapping"):
        certificate_problems(pem(leaf), {"key": key_pem(key)}, [], key_name="traefik_key")


def test_the_filter_is_exported():
    assert FilterModule().filters() == {"certificate_problems": certificate_problems}
