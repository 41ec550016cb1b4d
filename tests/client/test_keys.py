"""certman.keys, identifiers, directory presets: pure functions, no CA needed."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtensionOID, NameOID

from certman.client import (
    LETSENCRYPT,
    LETSENCRYPT_STAGING,
    Directory,
    RevocationReason,
    parse_identifiers,
    resolve_directory_url,
)
from certman.errors import AcmeError, ConfigError
from certman.keys import (
    DEFAULT_KEY_TYPE,
    KeyType,
    build_csr,
    generate_private_key,
    key_type_of,
    load_private_key,
    private_key_to_pem,
    public_key_pem,
)


@pytest.mark.parametrize("key_type", list(KeyType))
def test_generate_roundtrip(key_type: KeyType) -> None:
    key = generate_private_key(key_type)
    assert key_type_of(key) is key_type
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(pem)
    assert public_key_pem(loaded) == public_key_pem(key)
    assert key_type_of(loaded.public_key()) is key_type


def test_default_is_p256() -> None:
    assert DEFAULT_KEY_TYPE is KeyType.EC_P256
    key = generate_private_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ec-p256", KeyType.EC_P256),
        ("ECDSA-P384", KeyType.EC_P384),
        ("rsa2048", KeyType.RSA_2048),
        ("rsa_3072", KeyType.RSA_3072),
        ("rsa-4096", KeyType.RSA_4096),
        ("p-256", KeyType.EC_P256),
    ],
)
def test_key_type_parse(text: str, expected: KeyType) -> None:
    assert KeyType.parse(text) is expected


def test_key_type_parse_rejects_unknown() -> None:
    with pytest.raises(ConfigError) as info:
        KeyType.parse("dsa-1024")
    assert info.value.code == "invalid-key-type"
    assert "ec-p256" in str(info.value)


def test_load_traditional_formats() -> None:
    ec_key = generate_private_key(KeyType.EC_P256)
    sec1 = ec_key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert key_type_of(load_private_key(sec1)) is KeyType.EC_P256
    rsa_key = generate_private_key(KeyType.RSA_2048)
    pkcs1 = rsa_key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    assert key_type_of(load_private_key(pkcs1.decode())) is KeyType.RSA_2048
    encrypted = rsa_key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw")
    )
    assert key_type_of(load_private_key(encrypted, password=b"pw")) is KeyType.RSA_2048


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (ed25519.Ed25519PrivateKey.generate(), "unsupported-key"),
        (ec.generate_private_key(ec.SECP521R1()), "unsupported-key"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "unsupported-key"),
    ],
)
def test_load_rejects_unsupported_keys(key: object, code: str) -> None:
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        load_private_key(pem)
    assert info.value.code == code


def test_load_garbage_does_not_echo_it() -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigError) as info:
        load_private_key(secret)
    assert info.value.code == "key-invalid"
    assert "c2VjcmV0" not in str(info.value)


def test_csr_for_dns_wildcard_and_ip() -> None:
    key = generate_private_key()
    csr = x509.load_der_x509_csr(
        build_csr(key, ["example.org", "*.example.org", "192.0.2.1", "::1"])
    )
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert san.get_values_for_type(x509.DNSName) == ["example.org", "*.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.1"),
        ipaddress.ip_address("::1"),
    ]
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example.org"


def test_csr_ip_only_and_long_name_have_no_cn() -> None:
    key = generate_private_key()
    assert x509.load_der_x509_csr(build_csr(key, ["10.0.0.1"])).subject == x509.Name([])
    long_name = ("a" * 60) + ".example.org"
    csr = x509.load_der_x509_csr(build_csr(key, [long_name]))
    assert csr.subject == x509.Name([])
    with pytest.raises(ConfigError):
        build_csr(key, [])


def test_identifiers_normalize_and_dedupe() -> None:
    idents = parse_identifiers(
        ["Example.ORG.", "example.org", "*.Example.org", "2001:DB8::1", "[::1]", "bücher.example"]
    )
    assert [(i.type, i.value) for i in idents] == [
        ("dns", "example.org"),
        ("dns", "*.example.org"),
        ("ip", "2001:db8::1"),
        ("ip", "::1"),
        ("dns", "xn--bcher-kva.example"),
    ]
    assert idents[1].is_wildcard


@pytest.mark.parametrize(
    "bad",
    ["", "localhost", "a..b", "-a.example", "foo.*.example", "a b.example", "x" * 64 + ".org"],
)
def test_identifiers_reject_bad_names(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_identifiers([bad])
    assert info.value.code == "invalid-name"


def test_identifiers_need_one_name() -> None:
    with pytest.raises(ConfigError):
        parse_identifiers([])


def test_directory_presets() -> None:
    assert resolve_directory_url(None) == LETSENCRYPT
    assert resolve_directory_url(None, staging=True) == LETSENCRYPT_STAGING
    assert resolve_directory_url("letsencrypt-staging") == LETSENCRYPT_STAGING
    assert resolve_directory_url("https://ca.example/dir") == "https://ca.example/dir"
    with pytest.raises(ConfigError) as info:
        resolve_directory_url("https://ca.example/dir", staging=True)
    assert info.value.code == "invalid-server"
    with pytest.raises(ConfigError):
        resolve_directory_url("ftp://ca.example/dir")


def test_directory_parsing_rejects_non_directories() -> None:
    with pytest.raises(AcmeError) as info:
        Directory.from_json("https://x/dir", {"hello": "world"})
    assert info.value.code == "acme-bad-directory"
    with pytest.raises(AcmeError):
        Directory.from_json("https://x/dir", ["list"])
    d = Directory.from_json(
        "https://x/dir",
        {
            "newNonce": "n",
            "newAccount": "a",
            "newOrder": "o",
            "revokeCert": "r",
            "renewalInfo": "ri",
            "meta": {"profiles": {"classic": "c"}, "externalAccountRequired": True},
        },
    )
    assert d.renewal_info == "ri"
    assert d.profiles == {"classic": "c"}
    assert d.external_account_required


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4, RevocationReason.SUPERSEDED),
        ("key-compromise", RevocationReason.KEY_COMPROMISE),
        ("keyCompromise", RevocationReason.KEY_COMPROMISE),
        ("cessation_of_operation", RevocationReason.CESSATION_OF_OPERATION),
        ("0", RevocationReason.UNSPECIFIED),
    ],
)
def test_revocation_reason_parse(value: int | str, expected: RevocationReason) -> None:
    assert RevocationReason.parse(value) is expected


@pytest.mark.parametrize("value", [2, 6, "caCompromise", "whatever"])
def test_revocation_reason_rejects_others(value: int | str) -> None:
    with pytest.raises(ConfigError) as info:
        RevocationReason.parse(value)
    assert info.value.code == "invalid-revocation-reason"


def _self_signed(names: list[str]) -> x509.Certificate:
    import datetime as dt

    from cryptography.hazmat.primitives import hashes

    key = generate_private_key()
    subject = x509.Name([])
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_certificate_names_must_match_the_order() -> None:
    from certman.client.order import _check_names

    idents = parse_identifiers(["a.example", "*.a.example", "::1"])
    _check_names(_self_signed(["*.a.example", "A.example", "0:0::1"]), idents)  # same set
    with pytest.raises(AcmeError) as info:
        _check_names(_self_signed(["a.example", "::1"]), idents)
    assert info.value.code == "acme-bad-certificate"
    assert "*.a.example" in str(info.value)
    with pytest.raises(AcmeError):
        _check_names(_self_signed(["a.example", "*.a.example", "::1", "evil.example"]), idents)
