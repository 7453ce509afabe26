import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pki_server.core.extensions import is_dns_name, parse_general_name
from pki_server.core.utils import format_name, x509_name


def test_x509_name_slash_form() -> None:
    name = x509_name("/C=AT/ST=Vienna/L=Vienna/O=Example/OU=IT/CN=example.com/emailAddress=a@example.com")
    assert [a.oid for a in name] == [
        NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME, NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS,
    ]
    assert format_name(name) == "/C=AT/ST=Vienna/L=Vienna/O=Example/OU=IT/CN=example.com/emailAddress=a@example.com"
    assert x509_name("/CN=a\\/b").get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a/b"


def test_x509_name_rfc4514() -> None:
    assert x509_name("CN=example.com,O=Example,C=AT") == x509_name("/C=AT/O=Example/CN=example.com")
    assert x509_name("") == x509.Name([])
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    assert x509_name(name) is name


@pytest.mark.parametrize("bad", ["/XX=foo", "/CN", "/C=Austria", "CN=", "no equals sign"])
def test_x509_name_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        x509_name(bad)


def test_general_names() -> None:
    assert parse_general_name("example.com") == x509.DNSName("example.com")
    assert parse_general_name("DNS:*.Example.com.") == x509.DNSName("*.example.com")
    assert parse_general_name("192.0.2.1").value.compressed == "192.0.2.1"
    assert parse_general_name("IP:2001:db8::1").value.compressed == "2001:db8::1"
    assert parse_general_name("email:a@example.com") == x509.RFC822Name("a@example.com")
    for bad in ["-bad-.example.com", "IP:300.1.1.1", "exa mple.com", "a..b", "URI:nope"]:
        with pytest.raises(ValueError):
            parse_general_name(bad)


def test_is_dns_name() -> None:
    assert is_dns_name("a.b-c.example")
    assert not is_dns_name("*.a.example", allow_wildcard=False)
    assert not is_dns_name("a.*.example")
    assert not is_dns_name("1.2.3.4")
    assert not is_dns_name("x" * 64 + ".example")
