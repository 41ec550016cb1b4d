"""Endpoint specs: every accepted form, and clear errors for the rest."""

from __future__ import annotations

import pytest

from certman.errors import InspectorError
from certman.inspector.endpoints import (
    Endpoint,
    iter_endpoint_lines,
    looks_like_endpoint,
    parse_connect_to,
    parse_endpoint,
    parse_endpoint_line,
)


@pytest.mark.parametrize(
    ("spec", "host", "port", "starttls"),
    [
        ("example.org", "example.org", 443, None),
        ("Example.ORG.", "example.org", 443, None),
        ("example.org:8443", "example.org", 8443, None),
        ("https://example.org", "example.org", 443, None),
        ("https://example.org:8443/some/path?q=1", "example.org", 8443, None),
        ("https://user:pw@example.org/", "example.org", 443, None),
        ("[::1]:8443", "::1", 8443, None),
        ("[2001:DB8::1]", "2001:db8::1", 443, None),
        ("2001:db8::1", "2001:db8::1", 443, None),
        ("https://[::1]:9000", "::1", 9000, None),
        ("127.0.0.1:4443", "127.0.0.1", 4443, None),
        ("mail.example.org:25", "mail.example.org", 25, "smtp"),
        ("mail.example.org:587", "mail.example.org", 587, "smtp"),
        ("mail.example.org:143", "mail.example.org", 143, "imap"),
        ("mail.example.org:110", "mail.example.org", 110, "pop3"),
        ("ftp.example.org:21", "ftp.example.org", 21, "ftp"),
        ("mail.example.org:465", "mail.example.org", 465, None),
        ("smtp://mail.example.org", "mail.example.org", 25, "smtp"),
        ("smtp://mail.example.org:2525", "mail.example.org", 2525, "smtp"),
        ("imap://mail.example.org", "mail.example.org", 143, "imap"),
        ("imaps://mail.example.org", "mail.example.org", 993, None),
        ("pop3://mail.example.org", "mail.example.org", 110, "pop3"),
        ("ftp://files.example.org", "files.example.org", 21, "ftp"),
        ("bücher.example", "bücher.example", 443, None),
        ("_dmarc-ish.internal:1", "_dmarc-ish.internal", 1, None),
    ],
)
def test_accepted_forms(spec: str, host: str, port: int, starttls: str | None) -> None:
    ep = parse_endpoint(spec)
    assert (ep.host, ep.port, ep.starttls) == (host, port, starttls)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "example.org:0",
        "example.org:70000",
        "example.org:abc",
        "gopher://example.org",
        "[example.org]:443",
        "2001:db8::1:zz",
        "exa mple.org",
        "example..org",
        "/etc/ssl/cert.pem",
        "a" * 64 + ".example",
        "https://",
    ],
)
def test_rejected_forms(spec: str) -> None:
    with pytest.raises(InspectorError) as info:
        parse_endpoint(spec)
    assert info.value.code == "endpoint-bad-spec"
    assert "not an endpoint" in info.value.message


def test_starttls_choices() -> None:
    assert parse_endpoint("mail.example:25", starttls="none").starttls is None
    assert parse_endpoint("mail.example:25", starttls=None).starttls is None
    assert parse_endpoint("mail.example:2525", starttls="smtp").starttls == "smtp"
    assert parse_endpoint("web.example:443", starttls="auto").starttls is None
    # A URL scheme decides for itself, whatever the flag says.
    assert parse_endpoint("https://mail.example:25", starttls="smtp").starttls is None
    assert parse_endpoint("imap://mail.example", starttls="none").starttls == "imap"
    with pytest.raises(InspectorError) as info:
        parse_endpoint("mail.example:25", starttls="xmpp")
    assert info.value.code == "endpoint-bad-starttls"


def test_connect_to_keeps_the_name() -> None:
    ep = parse_endpoint("shop.example", connect_to="127.0.0.1:8443")
    assert ep.host == "shop.example" and ep.server_name == "shop.example"
    assert ep.address == ("127.0.0.1", 8443)
    assert ep.label == "shop.example:443 via 127.0.0.1:8443"
    # Port omitted: the endpoint's own port.
    assert parse_endpoint("shop.example:8443", connect_to="10.0.0.5").address == ("10.0.0.5", 8443)
    assert parse_connect_to("[::1]:9", default_port=443) == ("::1", 9)
    with pytest.raises(InspectorError) as info:
        parse_connect_to("http://x/", default_port=443)
    assert info.value.code == "endpoint-bad-connect-to"


def test_ip_literals_send_no_sni() -> None:
    assert parse_endpoint("127.0.0.1:443").server_name is None
    assert parse_endpoint("[::1]:443").server_name is None
    assert parse_endpoint("localhost:443").server_name == "localhost"


def test_labels_round_trip() -> None:
    for spec in ["example.org:443", "[::1]:8443", "smtp://mail.example:25", "imap://m.example:143"]:
        ep = parse_endpoint(spec)
        assert parse_endpoint(ep.label) == ep
    assert Endpoint("::1", 443).label == "[::1]:443"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://example.org", True),
        ("example.org:443", True),
        ("[::1]:443", True),
        ("[::1]", True),
        ("smtp://mail.example", True),
        ("example.org", False),  # could be a file name: needs a port or --endpoint
        ("certs/site.pem", False),
        ("-", False),
        ("*.pem", False),
        ("dir/sub:443", False),
    ],
)
def test_looks_like_endpoint(text: str, expected: bool) -> None:
    assert looks_like_endpoint(text) is expected


def test_endpoint_file_lines() -> None:
    lines = [
        "# customers\n",
        "\n",
        "a.example\n",
        "  b.example:8443   # staging\n",
        "c.example 127.0.0.1:9443\n",
        "#d.example\n",
    ]
    got = list(iter_endpoint_lines(lines))
    assert got == ["a.example", "b.example:8443", "c.example 127.0.0.1:9443"]
    ep = parse_endpoint_line(got[2], connect_to="10.9.9.9:1")
    assert ep.address == ("127.0.0.1", 9443)  # the line's own address wins
    assert parse_endpoint_line(got[0], connect_to="10.9.9.9:1").address == ("10.9.9.9", 1)
    with pytest.raises(InspectorError):
        parse_endpoint_line("a b c")


def test_lines_are_read_lazily() -> None:
    def lines():  # type: ignore[no-untyped-def]
        yield "a.example"
        raise AssertionError("read past what was asked for")

    it = iter_endpoint_lines(lines())
    assert next(it) == "a.example"
