"""Orders (RFC 8555 §7.4): new order -> authorizations -> Solver -> finalize -> chain.

Also revocation (§7.6). The conversation is done here rather than with
``acme.client.ClientV2.poll_and_finalize`` because that sleeps a fixed 1 s
before polling, which alone costs more than a whole issuance against a fast
CA. Here polling starts after ``poll_initial`` (25 ms) and doubles up to
``poll_max`` (1 s), honouring a longer ``Retry-After`` from the CA, all
under one overall deadline.

Round trips for one name with a fresh authorization: newOrder, authz,
challenge, 1-3 order polls, finalize, (order poll), certificate download —
plus one per alternate chain offered. Already-valid authorizations are
skipped (no challenge at all).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certman.challenges.base import ChallengeTask, Solver
from certman.client.directory import Directory
from certman.client.identifiers import Identifier, parse_identifiers
from certman.client.network import (
    PEM_CHAIN_CONTENT_TYPE,
    AcmeSession,
    jwk_thumbprint,
    problem_error,
)
from certman.errors import AcmeError, CertmanError, ConfigError
from certman.keys import (
    DEFAULT_KEY_TYPE,
    KeyType,
    PrivateKey,
    build_csr,
    generate_private_key,
    key_type_of,
    private_key_to_pem,
)

__all__ = [
    "IssuedCertificate",
    "RevocationReason",
    "issue",
    "revoke",
    "select_chain",
    "split_pem_chain",
]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class RevocationReason(enum.IntEnum):
    """CRL reason codes a subscriber may use (RFC 5280 §5.3.1; Let's Encrypt accepts these)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5

    @classmethod
    def parse(cls, value: int | str | RevocationReason) -> RevocationReason:
        """Accept ``4``, ``"superseded"``, ``"key-compromise"``, ``"keyCompromise"``."""
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                pass
        else:
            norm = re.sub(r"(?<!^)(?=[A-Z])", "_", value.strip()).replace("-", "_").upper()
            if norm.isdigit():
                return cls.parse(int(norm))
            if norm in cls.__members__:
                return cls[norm]
        choices = ", ".join(m.name.lower().replace("_", "-") for m in cls)
        raise ConfigError(
            f"unknown revocation reason {value!r} (choose one of {choices})",
            code="invalid-revocation-reason",
        )

    @property
    def label(self) -> str:
        """The kebab-case name used on the command line (``key-compromise``)."""
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate fresh from the CA, with its chain.

    ``cert_pem`` is the leaf, ``chain_pem`` the intermediates of the chosen
    chain, ``fullchain_pem`` both. ``alternates`` holds the other full chains
    the CA offered (``Link: rel="alternate"``). ``private_key_pem`` is set
    only when the client generated the key (PKCS#8, unencrypted: store it
    0600); it is kept out of ``repr``. ``authorizations_reused`` counts
    authorizations that were already valid and needed no challenge.
    """

    names: tuple[str, ...]
    cert_pem: str = field(repr=False)
    chain_pem: str = field(repr=False)
    fullchain_pem: str = field(repr=False)
    alternates: tuple[str, ...] = field(repr=False)
    order_url: str
    certificate_url: str
    serial: int
    not_before: datetime
    not_after: datetime
    issuer: str
    key_type: str
    profile: str | None = None
    replaces: str | None = None
    authorizations_reused: int = 0
    challenges_solved: int = 0
    private_key_pem: bytes | None = field(default=None, repr=False)


def split_pem_chain(pem: str) -> list[str]:
    """Every ``CERTIFICATE`` PEM block in ``pem``, each ending with a newline."""
    return [m.group(0).replace("\r\n", "\n") + "\n" for m in _PEM_CERT.finditer(pem)]


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def chain_top_issuer(fullchain_pem: str) -> str | None:
    """The issuer common name of the top-most certificate of a chain."""
    blocks = split_pem_chain(fullchain_pem)
    if not blocks:
        return None
    try:
        top = x509.load_pem_x509_certificate(blocks[-1].encode())
    except ValueError:
        return None
    return _common_name(top.issuer)


def select_chain(chains: Sequence[str], preferred_issuer: str | None) -> int:
    """Index of the chain to use: the first whose top certificate's issuer CN
    equals ``preferred_issuer`` (case-insensitive), else 0 (the CA's default).

    Matching the top certificate's *issuer* (not its subject) is what
    certbot's ``--preferred-chain`` does, so one name selects the chain up to
    a given root whether or not the root itself is included.
    """
    if preferred_issuer:
        want = preferred_issuer.strip().lower()
        for i, chain in enumerate(chains):
            top = chain_top_issuer(chain)
            if top is not None and top.lower() == want:
                return i
        log.info("no chain with top issuer %r; using the CA's default", preferred_issuer)
    return 0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str, identifier: str | None = None) -> None:
        if self.remaining() <= 0:
            raise AcmeError(
                f"gave up {what} after {self.seconds:g} s",
                code="acme-timeout",
                identifier=identifier,
            )


def _json_obj(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AcmeError(f"the CA sent a malformed {what}", code="acme-bad-response")
    return data


def _wait_order(
    session: AcmeSession,
    order_url: str,
    *,
    until: frozenset[str],
    deadline: _Deadline,
    poll_initial: float,
    poll_max: float,
    what: str,
) -> dict[str, Any]:
    """Poll the order until its status is in ``until`` or ``invalid``."""
    delay = poll_initial
    while True:
        pause = min(delay, max(deadline.remaining(), 0.0))
        time.sleep(pause)
        deadline.check(what)
        resp = session.post_as_get(order_url, context="order")
        order = _json_obj(resp.json(), "order")
        status = order.get("status")
        if status in until or status == "invalid":
            return order
        delay = min(delay * 2, poll_max)
        if resp.retry_after is not None:
            # The CA asked for a longer pause; never wait past the deadline.
            delay = max(delay, min(resp.retry_after, deadline.remaining()))


def _pick_challenge(
    authz: dict[str, Any], ident: str, solver: Solver
) -> tuple[dict[str, Any], str]:
    offered: dict[str, dict[str, Any]] = {}
    for chall in authz.get("challenges") or []:
        if isinstance(chall, dict) and isinstance(chall.get("type"), str):
            offered.setdefault(chall["type"], chall)
    for ctype in solver.challenge_types:
        if ctype in offered:
            return offered[ctype], ctype
    hint = ""
    if authz.get("wildcard") and "dns-01" not in solver.challenge_types:
        hint = " (wildcard names need DNS-01, e.g. --dns-hook)"
    raise AcmeError(
        f"{ident}: the CA offers {', '.join(sorted(offered)) or 'no challenges'}, the solver"
        f" answers {', '.join(solver.challenge_types) or 'none'}{hint}",
        code="acme-no-usable-challenge",
        identifier=ident,
    )


def _task_for(
    chall: dict[str, Any], ctype: str, ident: dict[str, Any], wildcard: bool, thumbprint: str
) -> ChallengeTask:
    token = chall.get("token")
    value = str(ident.get("value", ""))
    if wildcard and not value.startswith("*."):
        value = f"*.{value}"
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        # A token goes into a URL path and a file name: refuse anything odd.
        raise AcmeError(
            f"{value}: the CA sent an unsafe challenge token",
            code="acme-bad-token",
            identifier=value,
        )
    key_authorization = f"{token}.{thumbprint}"
    validation = (
        _b64url(hashlib.sha256(key_authorization.encode()).digest())
        if ctype == "dns-01"
        else key_authorization
    )
    return ChallengeTask(
        identifier=value,
        identifier_type=str(ident.get("type", "dns")),
        challenge_type=ctype,
        token=token,
        validation=validation,
    )


def _validation_error(session: AcmeSession, authz_urls: Sequence[str]) -> AcmeError:
    """The most specific reason an order became invalid, from its authorizations."""
    for url in authz_urls:
        authz = _json_obj(session.post_as_get(url, context="authorization").json(), "authz")
        if authz.get("status") == "valid":
            continue
        ident = _identifier_text(authz)
        for chall in authz.get("challenges") or []:
            if isinstance(chall, dict) and chall.get("error"):
                return problem_error(
                    chall["error"],
                    url=url,
                    context=f"validation of {ident} failed",
                    identifier=ident,
                )
        return AcmeError(
            f"validation of {ident} failed (authorization {authz.get('status')})",
            code="acme-validation-failed",
            identifier=ident,
        )
    return AcmeError("the order became invalid", code="acme-order-invalid")


def _identifier_text(authz: dict[str, Any]) -> str:
    ident = authz.get("identifier") or {}
    value = str(ident.get("value", "?")) if isinstance(ident, dict) else "?"
    return f"*.{value}" if authz.get("wildcard") else value


def issue(
    session: AcmeSession,
    directory: Directory,
    names: Sequence[str],
    solver: Solver,
    *,
    private_key: PrivateKey | None = None,
    key_type: KeyType | str = DEFAULT_KEY_TYPE,
    profile: str | None = None,
    preferred_chain: str | None = None,
    replaces: str | None = None,
    timeout: float = 120.0,
    poll_initial: float = 0.025,
    poll_max: float = 1.0,
) -> IssuedCertificate:
    """Order, validate, finalize and download one certificate for ``names``.

    ``names`` are DNS names (``*.`` wildcards included) and IP addresses; the
    first is the main name. The certificate key is ``private_key`` when
    given, else a new key of ``key_type`` (returned in
    ``private_key_pem``). ``profile`` must be one the directory lists in
    ``meta.profiles`` (``AcmeError`` ``acme-profile-not-offered`` otherwise,
    before any order is made). ``replaces`` is the RFC 9773 certificate id of
    the certificate this one renews; a CA that answers ``alreadyReplaced``
    raises that ``AcmeError`` unchanged (code ``acme-already-replaced``), so
    the caller can retry without it. ``preferred_chain`` selects among the
    alternate chains by the issuer CN of the top certificate.

    The solver is asked to present every challenge at once, and its cleanup
    always runs. ``timeout`` bounds the whole call (``acme-timeout``).
    Raises ``AcmeError`` for anything the CA refuses, with the problem type,
    detail and identifier.
    """
    deadline = _Deadline(timeout)
    identifiers = parse_identifiers(names)
    if profile is not None and profile not in directory.profiles:
        offered = ", ".join(sorted(directory.profiles)) or "none"
        raise AcmeError(
            f"the CA at {directory.url} does not offer the profile {profile!r}"
            f" (offered: {offered})",
            code="acme-profile-not-offered",
            profile=profile,
            offered=sorted(directory.profiles),
        )
    generated = private_key is None
    key = private_key if private_key is not None else generate_private_key(key_type)
    csr_der = build_csr(key, [i.value for i in identifiers])

    payload: dict[str, Any] = {"identifiers": [i.to_json() for i in identifiers]}
    if profile is not None:
        payload["profile"] = profile
    if replaces is not None:
        payload["replaces"] = replaces
    try:
        resp = session.post(directory.new_order, payload, context="new order", deadline=deadline.at)
    except AcmeError as exc:
        _attribute_identifier(exc, identifiers)
        raise
    order_url = resp.location
    if not order_url:
        raise AcmeError("the CA gave no order URL", code="acme-bad-response")
    order = _json_obj(resp.json(), "order")
    authz_urls = [str(u) for u in order.get("authorizations") or []]
    finalize_url = str(order.get("finalize", ""))
    log.debug("order %s for %s: %s", order_url, [i.value for i in identifiers], order.get("status"))

    reused, solved = 0, 0
    if order.get("status") == "pending":
        reused, solved = _authorize(
            session, order_url, authz_urls, solver, deadline, poll_initial, poll_max
        )
    elif order.get("status") == "invalid":
        raise _validation_error(session, authz_urls)
    else:
        reused = len(authz_urls)

    # Finalize (RFC 8555 §7.4): the order is "ready" now.
    deadline.check("finalizing the order")
    resp = session.post(
        finalize_url, {"csr": _b64url(csr_der)}, context="finalize", deadline=deadline.at
    )
    order = _json_obj(resp.json(), "order")
    if order.get("status") not in ("valid", "invalid"):
        order = _wait_order(
            session,
            order_url,
            until=frozenset({"valid"}),
            deadline=deadline,
            poll_initial=poll_initial,
            poll_max=poll_max,
            what="waiting for the certificate",
        )
    if order.get("status") != "valid":
        if order.get("error"):
            raise problem_error(order["error"], url=order_url, context="finalization failed")
        raise AcmeError(
            f"the order ended {order.get('status')} instead of valid", code="acme-order-invalid"
        )
    cert_url = str(order.get("certificate") or "")
    if not cert_url:
        raise AcmeError("the valid order has no certificate URL", code="acme-bad-response")

    resp = session.post_as_get(cert_url, accept=PEM_CHAIN_CONTENT_TYPE, context="download")
    chains = [resp.content.decode("ascii", "replace")]
    for alt in resp.links("alternate"):
        alt_resp = session.post_as_get(alt, accept=PEM_CHAIN_CONTENT_TYPE, context="download")
        chains.append(alt_resp.content.decode("ascii", "replace"))
    chosen = select_chain(chains, preferred_chain)
    blocks = split_pem_chain(chains[chosen])
    if not blocks:
        raise AcmeError("the CA sent no certificate", code="acme-bad-response", url=cert_url)
    try:
        leaf = x509.load_pem_x509_certificate(blocks[0].encode())
    except ValueError:
        raise AcmeError(
            "the CA sent an unreadable certificate", code="acme-bad-certificate", url=cert_url
        ) from None
    _check_names(leaf, identifiers)
    cert_spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if cert_spki != key_spki:
        raise AcmeError(
            "the CA returned a certificate for another key", code="acme-bad-certificate"
        )
    issued = IssuedCertificate(
        names=tuple(i.value for i in identifiers),
        cert_pem=blocks[0],
        chain_pem="".join(blocks[1:]),
        fullchain_pem="".join(blocks),
        alternates=tuple(c for i, c in enumerate(chains) if i != chosen),
        order_url=order_url,
        certificate_url=cert_url,
        serial=leaf.serial_number,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issuer=_common_name(leaf.issuer),
        key_type=key_type_of(key).value,
        profile=profile if profile is not None else _opt_str(order.get("profile")),
        replaces=replaces,
        authorizations_reused=reused,
        challenges_solved=solved,
        private_key_pem=private_key_to_pem(key) if generated else None,
    )
    log.info(
        "issued %s (serial %x, %d authz reused, %d solved)",
        issued.names[0],
        issued.serial,
        reused,
        solved,
    )
    return issued


def _check_names(leaf: x509.Certificate, identifiers: Sequence[Identifier]) -> None:
    """Refuse a certificate whose subjectAltName is not exactly what was ordered."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    got = {("dns", n.lower()) for n in san.get_values_for_type(x509.DNSName)}
    got |= {("ip", ip.compressed) for ip in san.get_values_for_type(x509.IPAddress)}
    want = {(i.type, i.value) for i in identifiers}
    if got != want:
        missing = sorted(v for _, v in want - got)
        extra = sorted(v for _, v in got - want)
        raise AcmeError(
            f"the CA returned a certificate for other names (missing: {missing}, extra: {extra})",
            code="acme-bad-certificate",
        )


def _attribute_identifier(exc: AcmeError, identifiers: Sequence[Identifier]) -> None:
    """Name the refused identifier when the CA only quoted it in the detail.

    Pebble (and Boulder for some policies) put the name in ``detail`` rather
    than in ``identifier``/``subproblems``; callers issuing for many names
    need to know which one to drop.
    """
    if exc.identifier is not None or not exc.detail:
        return
    for ident in identifiers:
        if f'"{ident.value}"' in exc.detail or f"'{ident.value}'" in exc.detail:
            exc.identifier = ident.value
            exc.details["identifier"] = ident.value
            return


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _authorize(
    session: AcmeSession,
    order_url: str,
    authz_urls: Sequence[str],
    solver: Solver,
    deadline: _Deadline,
    poll_initial: float,
    poll_max: float,
) -> tuple[int, int]:
    """Make every authorization valid; return (already valid, solved)."""
    thumbprint = jwk_thumbprint(session.key)
    to_answer: list[tuple[str, ChallengeTask]] = []
    waiting = 0
    reused = 0
    for url in authz_urls:
        authz = _json_obj(session.post_as_get(url, context="authorization").json(), "authz")
        status = authz.get("status")
        ident_text = _identifier_text(authz)
        if status == "valid":
            reused += 1
            continue
        if status != "pending":
            raise AcmeError(
                f"{ident_text}: authorization is {status}",
                code="acme-authorization-invalid",
                identifier=ident_text,
            )
        chall, ctype = _pick_challenge(authz, ident_text, solver)
        if chall.get("status") == "processing":
            waiting += 1  # answered already (e.g. by an earlier attempt): just wait
            continue
        ident = authz.get("identifier") or {}
        task = _task_for(chall, ctype, ident, bool(authz.get("wildcard")), thumbprint)
        to_answer.append((str(chall.get("url", "")), task))

    tasks = [t for _, t in to_answer]
    if tasks:
        solver.present(tasks)
    try:
        for chall_url, task in to_answer:
            session.post(
                chall_url,
                {},
                context=f"answering {task.challenge_type} for {task.identifier}",
                deadline=deadline.at,
            )
        if to_answer or waiting:
            order = _wait_order(
                session,
                order_url,
                until=frozenset({"ready", "processing", "valid"}),
                deadline=deadline,
                poll_initial=poll_initial,
                poll_max=poll_max,
                what="waiting for validation",
            )
            if order.get("status") == "invalid":
                raise _validation_error(session, authz_urls)
    finally:
        if tasks:
            try:
                solver.cleanup(tasks)
            except CertmanError as exc:  # e.g. the shared token store is down: one line
                log.warning("challenge cleanup failed: %s [%s]", exc, exc.code)
            except Exception:
                # The contract says cleanup must not raise; if it does, the
                # issuance result matters more than the leftover token.
                log.warning("challenge cleanup failed", exc_info=True)
    return reused, len(tasks)


def revoke(
    session: AcmeSession,
    directory: Directory,
    cert_pem: str | bytes,
    *,
    reason: RevocationReason | int | str = RevocationReason.UNSPECIFIED,
    cert_key: PrivateKey | None = None,
) -> None:
    """Revoke a certificate (RFC 8555 §7.6).

    Signed by the account (``kid``) by default; with ``cert_key`` signed by
    the certificate's own private key (``jwk``), which works without the
    issuing account — e.g. after a key compromise. ``cert_pem`` may be a full
    chain: the first certificate is revoked. Raises ``AcmeError`` (e.g.
    ``acme-already-revoked``, ``acme-unauthorized``).
    """
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise ConfigError("not a PEM certificate", code="invalid-certificate") from None
    rsn = RevocationReason.parse(reason)
    payload = {
        "certificate": _b64url(cert.public_bytes(serialization.Encoding.DER)),
        "reason": int(rsn),
    }
    session.post(directory.revoke_cert, payload, sign_key=cert_key, context="revocation")
    log.info("revoked certificate serial %x (%s)", cert.serial_number, rsn.label)
