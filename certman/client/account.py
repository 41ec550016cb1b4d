"""ACME accounts (RFC 8555 §7.3): register, find by key, update, key rollover, deactivate.

The functions take an :class:`~certman.client.network.AcmeSession` (one
thread's signed-request channel, holding the account key and ``kid``) and
the shared :class:`~certman.client.directory.Directory`, and return
:class:`Account` values. Most callers use them through
:class:`certman.client.AcmeClient`.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from acme import jws as acme_jws
from josepy.b64 import b64decode
from josepy.jwa import HS256, HS384, HS512
from josepy.jwk import JWKOct

from certman.client.directory import Directory
from certman.client.network import AcmeResponse, AcmeSession, jwk_thumbprint, public_jwk, sign_jws
from certman.errors import AcmeError, ConfigError
from certman.keys import PrivateKey

__all__ = [
    "Account",
    "ExternalAccountBinding",
    "deactivate",
    "fetch",
    "find",
    "register",
    "rollover",
    "update_contact",
]

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")


@dataclass(frozen=True)
class ExternalAccountBinding:
    """External Account Binding credentials (RFC 8555 §7.3.4) given by the CA.

    ``hmac_key`` is base64url (padding optional), as CAs hand it out; it is
    kept out of ``repr``.
    """

    key_id: str
    hmac_key: str = field(repr=False)
    algorithm: str = "HS256"


@dataclass(frozen=True)
class Account:
    """An ACME account as the CA describes it.

    ``url`` is the account URL (the JWS ``kid``); ``key_thumbprint`` the
    RFC 7638 thumbprint of the account key in use (not secret); ``created``
    is True only when this call made the account (False when the key already
    had one).
    """

    url: str
    directory_url: str
    status: str
    contact: tuple[str, ...] = ()
    orders_url: str | None = None
    terms_of_service_agreed: bool | None = None
    key_thumbprint: str = ""
    created: bool = False

    @property
    def emails(self) -> tuple[str, ...]:
        """The ``mailto:`` contacts without the scheme."""
        return tuple(c.removeprefix("mailto:") for c in self.contact if c.startswith("mailto:"))


def _contacts(emails: Iterable[str] | str | None) -> list[str]:
    if emails is None:
        return []
    if isinstance(emails, str):
        emails = [emails]
    out = []
    for raw in emails:
        email = raw.strip().removeprefix("mailto:")
        if not _EMAIL.fullmatch(email):
            raise ConfigError(f"not an e-mail address: {raw!r}", code="invalid-email")
        out.append(f"mailto:{email}")
    return out


def _account_from(
    resp: AcmeResponse,
    session: AcmeSession,
    directory: Directory,
    *,
    url: str | None = None,
    created: bool = False,
) -> Account:
    data = resp.json() if resp.content.strip() else {}
    if not isinstance(data, dict):
        data = {}
    account_url = resp.location or url or session.account_url
    if not account_url:
        raise AcmeError(
            "the CA did not say where the account is (no Location header)",
            code="acme-bad-response",
        )
    contact = data.get("contact") or []
    tos = data.get("termsOfServiceAgreed")
    return Account(
        url=account_url,
        directory_url=directory.url,
        status=str(data.get("status", "valid")),
        contact=tuple(str(c) for c in contact) if isinstance(contact, list) else (),
        orders_url=None if data.get("orders") is None else str(data["orders"]),
        terms_of_service_agreed=None if tos is None else bool(tos),
        key_thumbprint=jwk_thumbprint(session.key),
        created=created,
    )


def _eab_jws(eab: ExternalAccountBinding, key: PrivateKey, url: str) -> dict[str, Any]:
    """The ``externalAccountBinding`` field: the account's public JWK, MACed."""
    algs = {"HS256": HS256, "HS384": HS384, "HS512": HS512}
    alg = algs.get(eab.algorithm.upper())
    if alg is None:
        raise ConfigError(
            f"unsupported EAB algorithm {eab.algorithm!r} (HS256, HS384 or HS512)",
            code="invalid-eab",
        )
    try:
        mac_key = b64decode(eab.hmac_key.strip().rstrip("="))
    except (binascii.Error, ValueError):
        raise ConfigError("the EAB HMAC key is not base64url", code="invalid-eab") from None
    if not mac_key or not eab.key_id:
        raise ConfigError("EAB needs both a key id and an HMAC key", code="invalid-eab")
    signed = acme_jws.JWS.sign(
        json.dumps(public_jwk(key)).encode(),
        key=JWKOct(key=mac_key),
        alg=alg,
        nonce=None,
        url=url,
        kid=eab.key_id,
    )
    data: dict[str, Any] = signed.to_partial_json(flat=True)
    return data


def register(
    session: AcmeSession,
    directory: Directory,
    *,
    agree_tos: bool,
    email: Iterable[str] | str | None = None,
    eab: ExternalAccountBinding | None = None,
) -> Account:
    """Create an account for the session's key (or return the one it already has).

    ``agree_tos`` must be True when the CA publishes terms of service: the
    user has to agree explicitly (``ConfigError`` ``acme-tos-not-agreed``
    otherwise). E-mail is optional. ``eab`` is needed by CAs that require
    External Account Binding; without it such a CA refuses with
    ``acme-external-account-required``. Sets ``session.account_url``.
    """
    if directory.terms_of_service and not agree_tos:
        raise ConfigError(
            f"the CA requires agreeing to its terms of service ({directory.terms_of_service});"
            " pass agree_tos=True (--agree-tos) to accept them",
            code="acme-tos-not-agreed",
        )
    payload: dict[str, Any] = {"termsOfServiceAgreed": bool(agree_tos)}
    contacts = _contacts(email)
    if contacts:
        payload["contact"] = contacts
    if eab is not None:
        payload["externalAccountBinding"] = _eab_jws(eab, session.key, directory.new_account)
    resp = session.post(directory.new_account, payload, use_jwk=True, context="registration")
    account = _account_from(resp, session, directory, created=resp.status == 201)
    session.account_url = account.url
    log.info("account %s %s", account.url, "created" if account.created else "already existed")
    return account


def find(session: AcmeSession, directory: Directory) -> Account:
    """Look up the account of the session's key (``onlyReturnExisting``).

    Raises ``AcmeError`` ``acme-account-does-not-exist`` when the key has no
    account at this CA. Sets ``session.account_url``.
    """
    resp = session.post(
        directory.new_account,
        {"onlyReturnExisting": True},
        use_jwk=True,
        context="account lookup",
    )
    account = _account_from(resp, session, directory)
    session.account_url = account.url
    return account


def _require_url(session: AcmeSession) -> str:
    if not session.account_url:
        raise AcmeError(
            "no account URL: register or find the account first", code="acme-no-account"
        )
    return session.account_url


def fetch(session: AcmeSession, directory: Directory) -> Account:
    """The account's current state (POST-as-GET of the account URL)."""
    url = _require_url(session)
    return _account_from(session.post_as_get(url, context="account"), session, directory, url=url)


def update_contact(
    session: AcmeSession, directory: Directory, email: Iterable[str] | str | None
) -> Account:
    """Replace the account's contacts (``None`` or ``[]`` removes them all)."""
    url = _require_url(session)
    resp = session.post(url, {"contact": _contacts(email)}, context="account update")
    return _account_from(resp, session, directory, url=url)


def rollover(session: AcmeSession, directory: Directory, new_key: PrivateKey) -> Account:
    """Change the account key (RFC 8555 §7.3.5); the session uses ``new_key`` after.

    The ``acme`` package has no helper for this, so the two JWS are built
    here: the inner one signed by the NEW key with its ``jwk`` (no nonce),
    payload ``{"account": <kid>, "oldKey": <old public JWK>}``, wrapped as
    the payload of an outer one signed by the OLD key with the ``kid``.
    After success the old key is refused by the CA. The caller must persist
    ``new_key`` before dropping the old one (a crash in between leaves a
    key the CA no longer knows otherwise).
    """
    url = _require_url(session)
    if directory.key_change is None:
        raise AcmeError("the CA does not support account key rollover", code="acme-no-key-change")
    inner = sign_jws(
        json.dumps({"account": url, "oldKey": public_jwk(session.key)}).encode(),
        new_key,
        url=directory.key_change,
        nonce=None,
        kid=None,
    )
    session.post(directory.key_change, inner, context="key rollover")
    session.key = new_key
    log.info("account %s: key rolled over", url)
    return fetch(session, directory)


def deactivate(session: AcmeSession, directory: Directory) -> Account:
    """Deactivate the account for good (RFC 8555 §7.3.6); the CA refuses it after."""
    url = _require_url(session)
    resp = session.post(url, {"status": "deactivated"}, context="account deactivation")
    log.info("account %s deactivated", url)
    return _account_from(resp, session, directory, url=url)
