"""Accounts against a real Pebble: register, EAB, find, update, rollover, deactivate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from certman.client import AcmeClient, ExternalAccountBinding, fetch_directory
from certman.errors import AcmeError, ConfigError
from certman.keys import KeyType, generate_private_key
from certman.testing import LocalPebble
from tests.client.helpers import Http01Solver, start_pebble

pytestmark = pytest.mark.pebble

EAB_KID = "kid-1"
EAB_HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def new_client(pebble: LocalPebble, key_type: KeyType = KeyType.EC_P256) -> AcmeClient:
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    return AcmeClient(directory, generate_private_key(key_type), ca_bundle=pebble.ca_bundle)


def test_register_without_email(pebble: LocalPebble) -> None:
    with new_client(pebble) as client:
        account = client.register(agree_tos=True)
        assert account.created
        assert account.status == "valid"
        assert account.contact == ()
        assert account.url.startswith(pebble.directory_url.rsplit("/", 1)[0])
        assert client.account_url == account.url
        # Registering again with the same key returns the same account, not a new one.
        again = client.register(agree_tos=True)
        assert again.url == account.url
        assert not again.created


@pytest.mark.parametrize("key_type", [KeyType.EC_P384, KeyType.RSA_2048])
def test_register_with_other_account_key_types(pebble: LocalPebble, key_type: KeyType) -> None:
    with new_client(pebble, key_type) as client:
        account = client.register(agree_tos=True, email="ops@example.org")
        assert account.emails == ("ops@example.org",)
        assert client.account().url == account.url  # signed requests with this key work


def test_register_requires_explicit_terms_agreement(pebble: LocalPebble) -> None:
    with new_client(pebble) as client, pytest.raises(ConfigError) as info:
        client.register(agree_tos=False)
    assert info.value.code == "acme-tos-not-agreed"
    assert client.account_url is None


def test_invalid_email_is_refused_before_sending(pebble: LocalPebble) -> None:
    with new_client(pebble) as client, pytest.raises(ConfigError) as info:
        client.register(agree_tos=True, email="not an address")
    assert info.value.code == "invalid-email"


def test_find_by_key(pebble: LocalPebble) -> None:
    key = generate_private_key()
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    with AcmeClient(directory, key, ca_bundle=pebble.ca_bundle) as first:
        registered = first.register(agree_tos=True, email="a@example.org")
    with AcmeClient(directory, key, ca_bundle=pebble.ca_bundle) as second:
        found = second.find_account()
    assert found.url == registered.url
    assert found.emails == ("a@example.org",)
    assert second.account_url == registered.url


def test_find_unknown_key_is_a_clear_error(pebble: LocalPebble) -> None:
    with new_client(pebble) as client, pytest.raises(AcmeError) as info:
        client.find_account()
    assert info.value.code == "acme-account-does-not-exist"
    assert info.value.problem_type == "urn:ietf:params:acme:error:accountDoesNotExist"


def test_update_contact(client: AcmeClient) -> None:
    updated = client.update_contact(["one@example.org", "mailto:two@example.org"])
    assert updated.emails == ("one@example.org", "two@example.org")
    assert client.account().emails == ("one@example.org", "two@example.org")
    cleared = client.update_contact(None)
    assert cleared.contact == ()


def test_rollover_old_key_refused_new_key_works(
    pebble: LocalPebble, http_solver: Http01Solver
) -> None:
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    old_key = generate_private_key()
    with AcmeClient(directory, old_key, ca_bundle=pebble.ca_bundle) as client:
        account = client.register(agree_tos=True)
        new_key = generate_private_key(KeyType.EC_P384)
        rolled = client.rollover(new_key)
        assert rolled.url == account.url
        assert rolled.key_thumbprint != account.key_thumbprint
        assert client.account_key is new_key
        # The rolled client keeps working with the new key.
        cert = client.issue(["rolled.example"], http_solver)
        assert cert.names == ("rolled.example",)

    # The old key no longer finds (or signs for) the account.
    with AcmeClient(directory, old_key, ca_bundle=pebble.ca_bundle) as old:
        with pytest.raises(AcmeError) as info:
            old.find_account()
        assert info.value.code == "acme-account-does-not-exist"
    with (
        AcmeClient(directory, old_key, account_url=account.url, ca_bundle=pebble.ca_bundle) as old,
        pytest.raises(AcmeError) as info,
    ):
        old.account()
    assert info.value.problem_type is not None
    # The new key finds the same account from scratch.
    with AcmeClient(directory, new_key, ca_bundle=pebble.ca_bundle) as fresh:
        assert fresh.find_account().url == account.url


def test_rollover_to_a_key_already_in_use_is_refused(pebble: LocalPebble) -> None:
    directory = fetch_directory(pebble.directory_url, ca_bundle=pebble.ca_bundle)
    taken = generate_private_key()
    with AcmeClient(directory, taken, ca_bundle=pebble.ca_bundle) as other:
        other.register(agree_tos=True)
    with new_client(pebble) as client:
        client.register(agree_tos=True)
        before = client.account_key
        with pytest.raises(AcmeError):
            client.rollover(taken)
        assert client.account_key is before  # unchanged after a refusal


def test_deactivate_then_refused(client: AcmeClient, http_solver: Http01Solver) -> None:
    account = client.deactivate()
    assert account.status == "deactivated"
    with pytest.raises(AcmeError) as info:
        client.issue(["after-deactivate.example"], http_solver)
    assert info.value.code == "acme-unauthorized"
    assert "deactivated" in str(info.value).lower() or info.value.detail


@pytest.fixture(scope="module")
def eab_pebble() -> Iterator[LocalPebble]:
    p = start_pebble(eab_keys={EAB_KID: EAB_HMAC})
    try:
        yield p
    finally:
        p.stop()


def test_eab_required_directory_says_so(eab_pebble: LocalPebble) -> None:
    directory = fetch_directory(eab_pebble.directory_url, ca_bundle=eab_pebble.ca_bundle)
    assert directory.external_account_required


def test_eab_register_with_binding(eab_pebble: LocalPebble) -> None:
    with new_client(eab_pebble) as client:
        account = client.register(
            agree_tos=True, eab=ExternalAccountBinding(EAB_KID, EAB_HMAC + "==")
        )
        assert account.status == "valid"
        assert "zWNDZM6" not in repr(ExternalAccountBinding(EAB_KID, EAB_HMAC))


def test_eab_register_without_binding_is_refused(eab_pebble: LocalPebble) -> None:
    with new_client(eab_pebble) as client, pytest.raises(AcmeError) as info:
        client.register(agree_tos=True)
    assert info.value.code == "acme-external-account-required"
    assert client.account_url is None


def test_eab_wrong_hmac_is_refused(eab_pebble: LocalPebble) -> None:
    wrong = ExternalAccountBinding(EAB_KID, "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJ")
    with new_client(eab_pebble) as client, pytest.raises(AcmeError) as info:
        client.register(agree_tos=True, eab=wrong)
    assert info.value.problem_type is not None
    assert client.account_url is None


def test_eab_bad_base64_is_a_config_error(eab_pebble: LocalPebble) -> None:
    with new_client(eab_pebble) as client, pytest.raises(ConfigError) as info:
        client.register(agree_tos=True, eab=ExternalAccountBinding(EAB_KID, "***"))
    assert info.value.code == "invalid-eab"
