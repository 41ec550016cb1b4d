"""Issuance and revocation against a real Pebble with its default chaos."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from certman.challenges.base import ChallengeTask
from certman.client import AcmeClient, RevocationReason, fetch_directory
from certman.client.account import register
from certman.client.network import AcmeResponse, AcmeSession, HttpTransport
from certman.client.order import issue, split_pem_chain
from certman.errors import AcmeError
from certman.keys import KeyType, generate_private_key, load_private_key
from certman.testing import LocalPebble
from tests.client.helpers import Dns01Solver, Http01Solver, start_pebble

pytestmark = pytest.mark.pebble


def sans(cert_pem: str) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    dns = ext.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return dns, ips


def verify_chain(fullchain_pem: str, root_pem: str) -> None:
    """Each certificate is signed by the next one, and the last by the root."""
    certs = [x509.load_pem_x509_certificate(b.encode()) for b in split_pem_chain(fullchain_pem)]
    certs.append(x509.load_pem_x509_certificate(root_pem.encode()))
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)


def test_single_name(client: AcmeClient, pebble: LocalPebble, http_solver: Http01Solver) -> None:
    cert = client.issue(["single.example"], http_solver)
    assert cert.names == ("single.example",)
    assert sans(cert.cert_pem) == (["single.example"], [])
    assert cert.fullchain_pem == cert.cert_pem + cert.chain_pem
    assert len(split_pem_chain(cert.chain_pem)) == 1
    verify_chain(cert.fullchain_pem, pebble.root_pem())
    assert cert.key_type == "ec-p256"
    assert cert.private_key_pem is not None
    key = load_private_key(cert.private_key_pem)
    leaf = x509.load_pem_x509_certificate(cert.cert_pem.encode())
    assert leaf.public_key() == key.public_key()
    assert cert.serial == leaf.serial_number
    assert cert.not_after > cert.not_before
    assert cert.issuer.startswith("Pebble Intermediate CA")
    assert "BEGIN" not in repr(cert)  # no PEM (and never a key) in repr
    assert not http_solver.tokens  # cleaned up


def test_multi_name_and_ip(client: AcmeClient, http_solver: Http01Solver) -> None:
    names = ["www.multi.example", "MULTI.example.", "127.0.0.1", "www.multi.example"]
    cert = client.issue(names, http_solver)
    # normalized, de-duplicated, order kept
    assert cert.names == ("www.multi.example", "multi.example", "127.0.0.1")
    dns, ips = sans(cert.cert_pem)
    assert sorted(dns) == ["multi.example", "www.multi.example"]
    assert ips == ["127.0.0.1"]
    tasks = [t for t in http_solver.presented if t.identifier == "127.0.0.1"]
    if tasks:  # the IP authorization may have been reused from an earlier order
        assert tasks[-1].identifier_type == "ip"


def test_ip_only(client: AcmeClient, http_solver: Http01Solver) -> None:
    cert = client.issue(["127.0.0.1"], http_solver)
    assert sans(cert.cert_pem) == ([], ["127.0.0.1"])
    assert ipaddress.ip_address(cert.names[0]).version == 4


@pytest.mark.parametrize(
    ("key_type", "cls", "size"),
    [
        (KeyType.EC_P384, ec.EllipticCurvePrivateKey, 384),
        (KeyType.RSA_2048, rsa.RSAPrivateKey, 2048),
    ],
)
def test_key_types(
    client: AcmeClient, http_solver: Http01Solver, key_type: KeyType, cls: type, size: int
) -> None:
    cert = client.issue([f"{key_type.value}.example"], http_solver, key_type=key_type)
    assert cert.key_type == key_type.value
    assert cert.private_key_pem is not None
    key = load_private_key(cert.private_key_pem)
    assert isinstance(key, cls)
    assert key.key_size == size


def test_caller_supplied_key_is_used_and_not_returned(
    client: AcmeClient, http_solver: Http01Solver
) -> None:
    key = generate_private_key(KeyType.RSA_2048)
    cert = client.issue(["ownkey.example"], http_solver, private_key=key)
    assert cert.private_key_pem is None
    leaf = x509.load_pem_x509_certificate(cert.cert_pem.encode())
    assert leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_wildcard_via_dns01(client: AcmeClient, pebble: LocalPebble) -> None:
    solver = Dns01Solver(pebble)
    cert = client.issue(["*.wild.example", "wild.example"], solver)
    dns, _ = sans(cert.cert_pem)
    assert sorted(dns) == ["*.wild.example", "wild.example"]
    for task in solver.presented:
        assert task.challenge_type == "dns-01"
        assert task.dns_record_name == "_acme-challenge.wild.example."
        assert task.validation != task.token  # the digest, not the key authorization
    assert solver.cleaned == solver.presented


def test_wildcard_with_http_only_solver_is_a_clear_error(
    client: AcmeClient, http_solver: Http01Solver
) -> None:
    with pytest.raises(AcmeError) as info:
        client.issue(["*.nohttp.example"], http_solver)
    assert info.value.code == "acme-no-usable-challenge"
    assert info.value.identifier == "*.nohttp.example"
    assert "DNS-01" in str(info.value)


class _Combined:
    """A solver that prefers HTTP-01 and falls back to DNS-01."""

    challenge_types = ("http-01", "dns-01")

    def __init__(self, http: Http01Solver, dns: Dns01Solver) -> None:
        self.http, self.dns = http, dns

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        self.http.present([t for t in tasks if t.challenge_type == "http-01"])
        self.dns.present([t for t in tasks if t.challenge_type == "dns-01"])

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        self.http.cleanup([t for t in tasks if t.challenge_type == "http-01"])
        self.dns.cleanup([t for t in tasks if t.challenge_type == "dns-01"])


def test_solver_preference_per_authorization(
    client: AcmeClient, pebble: LocalPebble, http_solver: Http01Solver
) -> None:
    dns = Dns01Solver(pebble)
    before = len(http_solver.presented)
    cert = client.issue(["*.mixed.example", "plain.mixed.example"], _Combined(http_solver, dns))
    assert len(cert.names) == 2
    assert all(t.identifier == "*.mixed.example" for t in dns.presented)
    assert all(t.identifier == "plain.mixed.example" for t in http_solver.presented[before:])


def test_refused_name(client: AcmeClient, http_solver: Http01Solver) -> None:
    with pytest.raises(AcmeError) as info:
        client.issue(["fine.example", "blocked.example"], http_solver)
    err = info.value
    assert err.code == "acme-rejected-identifier"
    assert err.problem_type == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert err.identifier == "blocked.example"
    assert "\n" not in str(err)


class _WrongAnswer:
    """Serves a wrong key authorization through the session's HTTP responder."""

    challenge_types = ("http-01",)

    def __init__(self, http: Http01Solver) -> None:
        self.http = http
        self.presented: list[ChallengeTask] = []
        self.cleaned: list[ChallengeTask] = []

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            self.http.tokens[task.token] = "wrong"
            self.presented.append(task)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            self.http.tokens.pop(task.token, None)
            self.cleaned.append(task)


def test_failed_validation_names_the_identifier_and_cleans_up(
    client: AcmeClient, http_solver: Http01Solver
) -> None:
    # A name never validated before has no reusable authorization, so the CA
    # must fetch the (wrong) answer.
    solver = _WrongAnswer(http_solver)
    with pytest.raises(AcmeError) as info:
        client.issue(["wrong-answer.example"], solver)
    assert info.value.code == "acme-unauthorized"
    assert info.value.identifier == "wrong-answer.example"
    assert "validation of wrong-answer.example failed" in str(info.value)
    assert solver.presented
    assert solver.cleaned == solver.presented
    assert not http_solver.tokens


def test_revoke_with_account_key(
    client: AcmeClient, pebble: LocalPebble, http_solver: Http01Solver
) -> None:
    cert = client.issue(["revoke-account.example"], http_solver)
    assert not pebble.is_revoked(cert.serial)
    client.revoke(cert.fullchain_pem, reason="superseded")
    status = pebble.cert_status(cert.serial)
    assert status["Status"] == "Revoked"
    assert status["Reason"] == RevocationReason.SUPERSEDED
    with pytest.raises(AcmeError) as info:
        client.revoke(cert.cert_pem)
    assert info.value.code == "acme-already-revoked"


def test_revoke_with_certificate_key(
    client: AcmeClient, pebble: LocalPebble, http_solver: Http01Solver
) -> None:
    cert = client.issue(["revoke-certkey.example"], http_solver)
    assert cert.private_key_pem is not None
    cert_key = load_private_key(cert.private_key_pem)
    # Another account (or none at all) can revoke with the certificate's key.
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    with AcmeClient(directory, generate_private_key(), ca_bundle=pebble.ca_bundle) as stranger:
        stranger.register(agree_tos=True)
        with pytest.raises(AcmeError) as info:
            stranger.revoke(cert.cert_pem)  # with its own account key: not authorized
        assert info.value.code == "acme-unauthorized"
        assert not pebble.is_revoked(cert.serial)
        stranger.revoke(cert.cert_pem, cert_key=cert_key, reason=RevocationReason.KEY_COMPROMISE)
    status = pebble.cert_status(cert.serial)
    assert status["Status"] == "Revoked"
    assert status["Reason"] == 1


def test_authorizations_already_valid_are_skipped(pebble: LocalPebble) -> None:
    p = start_pebble(authz_reuse=100)
    try:
        directory = fetch_directory(p.directory_url, ca_bundle=p.ca_bundle)
        solver = Http01Solver(p.http_port)
        try:
            with AcmeClient(directory, generate_private_key(), ca_bundle=p.ca_bundle) as client:
                client.register(agree_tos=True)
                first = client.issue(["reuse.example", "127.0.0.1"], solver)
                assert first.challenges_solved == 2
                asked = solver.requests
                second = client.issue(["reuse.example", "127.0.0.1"], solver)
        finally:
            solver.close()
    finally:
        p.stop()
    assert second.authorizations_reused == 2
    assert second.challenges_solved == 0
    assert solver.requests == asked  # the CA did not validate again
    assert second.serial != first.serial


def test_many_threads_one_client_each_shared_directory(
    pebble: LocalPebble, http_solver: Http01Solver
) -> None:
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    account_key = generate_private_key()
    with AcmeClient(directory, account_key, ca_bundle=pebble.ca_bundle) as c:
        account_url = c.register(agree_tos=True).url
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with AcmeClient(
                directory, account_key, account_url=account_url, ca_bundle=pebble.ca_bundle
            ) as client:
                results[n] = [
                    client.issue([f"t{n}-{i}.threads.example"], http_solver).names[0]
                    for i in range(3)
                ]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(n for names in results.values() for n in names) == sorted(
        f"t{n}-{i}.threads.example" for n in range(4) for i in range(3)
    )


class _RecordingTransport(HttpTransport):
    """Keeps the decoded JWS payload of every POST (a seam for checking what is sent)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payloads: list[tuple[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> AcmeResponse:
        data = kwargs.get("data")
        if method == "POST" and data:
            raw = base64.urlsafe_b64decode(json.loads(data)["payload"] + "==")
            self.payloads.append((url, json.loads(raw) if raw else None))
        return super().request(method, url, **kwargs)


def test_profile_and_replaces_are_sent_in_new_order(
    pebble: LocalPebble, http_solver: Http01Solver
) -> None:
    # Pebble 2.4.0 offers no profiles (and ignores unknown newOrder fields), so
    # the directory is given a profile here and the payload is checked at the
    # transport seam, while the order itself goes to the real Pebble.
    real = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    directory = dataclasses.replace(real, profiles={"shortlived": "short"})
    transport = _RecordingTransport(ca_bundle=pebble.ca_bundle)
    session = AcmeSession(directory.new_nonce, generate_private_key(), transport=transport)
    try:
        register(session, directory, agree_tos=True)
        cert = issue(
            session,
            directory,
            ["profile.example"],
            http_solver,
            profile="shortlived",
            replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        )
    finally:
        session.close()
    assert cert.profile == "shortlived"
    # (a badNonce retry sends the same payload again: compare the distinct ones)
    new_orders = {json.dumps(p) for url, p in transport.payloads if url == directory.new_order}
    assert new_orders == {
        json.dumps(
            {
                "identifiers": [{"type": "dns", "value": "profile.example"}],
                "profile": "shortlived",
                "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
            }
        )
    }
    # Without the options, neither field is sent.
    transport.payloads.clear()
    session = AcmeSession(
        directory.new_nonce, session.key, account_url=session.account_url, transport=transport
    )
    issue(session, directory, ["plain-profile.example"], http_solver)
    new_orders = {json.dumps(p) for url, p in transport.payloads if url == directory.new_order}
    assert new_orders == {
        json.dumps({"identifiers": [{"type": "dns", "value": "plain-profile.example"}]})
    }


def test_overall_deadline(client: AcmeClient, http_solver: Http01Solver) -> None:
    with pytest.raises(AcmeError) as info:
        client.issue(["deadline.example"], http_solver, timeout=0.005)
    assert info.value.code == "acme-timeout"
    assert not http_solver.tokens  # cleanup ran even so
