"""ACME Renewal Information (ARI, RFC 9773): certificate ids and renewalInfo fetches.

A CA that supports ARI lists a ``renewalInfo`` URL in its directory. Appending
the certificate identifier of RFC 9773 §4.1 gives the certificate's
RenewalInfo resource, fetched with a plain, unauthenticated GET. It holds the
window in which the CA suggests renewing (and, optionally, a URL explaining
why, e.g. after a mass revocation). The same identifier goes into a renewal
order's ``replaces`` field (RFC 9773 §5).

What to *do* with the window is policy and lives in :mod:`certman.renewal`;
this module only talks HTTP and parses. It uses ``requests`` directly (not the
``acme`` library's ``ClientNetwork``) because the request is unsigned and
must not touch the account's nonce pool, so any thread can fetch ARI for any
certificate.

Trust: the CA bundle is always passed to ``requests`` explicitly (the one
given, else certifi's). Passing ``verify=True`` would let a
``REQUESTS_CA_BUNDLE`` in the environment silently replace it.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from os import PathLike
from typing import Any

import certifi
import requests
from cryptography import x509

from certman._version import __version__
from certman.errors import AcmeError
from certman.renewal import (
    RandomSource,
    RenewalDecision,
    RenewalInfo,
    RenewalState,
    SuggestedWindow,
    ari_check_due,
    decide,
    parse_rfc3339,
    record_ari_error,
)

logger = logging.getLogger(__name__)

USER_AGENT = f"certman/{__version__}"

MIN_RETRY_AFTER = timedelta(minutes=1)
"""Retry-After values below this are treated as this (RFC 9773 §4.3's example)."""
MAX_RETRY_AFTER = timedelta(days=1)
"""Retry-After values above this are treated as this (RFC 9773 §4.3's example)."""
DEFAULT_RETRY_AFTER = timedelta(hours=6)
"""When the CA sends no usable Retry-After: check again after this long."""

DEFAULT_TIMEOUT = 10.0
"""Seconds for connecting and for each read of one renewalInfo fetch."""

_MAX_BODY = 64 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]+")

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "MAX_RETRY_AFTER",
    "MIN_RETRY_AFTER",
    "USER_AGENT",
    "RenewalInfo",
    "cert_id",
    "cert_id_from_parts",
    "clamp_retry_after",
    "decide_with_ari",
    "discover_renewal_info_url",
    "fetch_renewal_info",
    "parse_cert_id",
    "parse_renewal_info",
    "parse_retry_after",
    "renewal_info_url",
]


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return now.astimezone(UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError(f"not unpadded base64url: {text!r}")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _serial_der_bytes(serial: int) -> bytes:
    """The content octets of the DER INTEGER encoding of ``serial``.

    Two's complement, minimal length: a positive serial whose top bit is set
    gets a leading zero byte (RFC 9773 §4.1 insists on it).
    """
    magnitude = serial if serial >= 0 else ~serial
    length = magnitude.bit_length() // 8 + 1
    return serial.to_bytes(length, "big", signed=True)


def cert_id_from_parts(key_identifier: bytes, serial_number: int) -> str:
    """``base64url(AKI keyIdentifier) "." base64url(DER serial bytes)`` (RFC 9773 §4.1)."""
    if not key_identifier:
        raise ValueError("the authority key identifier is empty")
    return f"{_b64url(key_identifier)}.{_b64url(_serial_der_bytes(serial_number))}"


def cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 §4.1 certificate identifier of ``cert``.

    Raises ``AcmeError`` (code ``ari-no-aki``) when the certificate has no
    Authority Key Identifier with a keyIdentifier: such a certificate cannot
    be named to the CA, so ARI does not apply to it.
    """
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or not aki.key_identifier:
        raise AcmeError(
            "the certificate has no Authority Key Identifier, so it has no ARI identifier",
            code="ari-no-aki",
        )
    return cert_id_from_parts(aki.key_identifier, cert.serial_number)


def parse_cert_id(value: str) -> tuple[bytes, int]:
    """Split a certificate identifier into (keyIdentifier, serial number).

    Raises ``ValueError`` unless ``value`` is two non-empty unpadded
    base64url parts joined by one dot.
    """
    parts = value.split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"not an ARI certificate identifier: {value!r}")
    try:
        key_id = _b64url_decode(parts[0])
        serial_bytes = _b64url_decode(parts[1])
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"not an ARI certificate identifier: {value!r}") from exc
    if not key_id or not serial_bytes:
        raise ValueError(f"not an ARI certificate identifier: {value!r}")
    return key_id, int.from_bytes(serial_bytes, "big", signed=True)


def renewal_info_url(directory: Mapping[str, Any]) -> str | None:
    """The ``renewalInfo`` URL from a parsed ACME directory, None when the CA has no ARI."""
    url = directory.get("renewalInfo")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    if url is not None:
        logger.warning("ignoring malformed renewalInfo URL in the directory: %r", url)
    return None


def parse_retry_after(value: str | None, *, now: datetime) -> datetime | None:
    """The absolute time a ``Retry-After`` header names, None when absent or unparsable.

    Accepts both forms of RFC 9110 §10.2.3: delay-seconds and an HTTP-date.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return now + timedelta(seconds=int(value))
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        # RFC 9110 HTTP-dates are GMT; parsedate_to_datetime leaves "-0000" naive.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def clamp_retry_after(at: datetime | None, *, now: datetime) -> datetime:
    """When to check again: ``at`` kept within [now + 1 min, now + 1 day], default now + 6 h."""
    if at is None:
        return now + DEFAULT_RETRY_AFTER
    return min(max(at, now + MIN_RETRY_AFTER), now + MAX_RETRY_AFTER)


def parse_renewal_info(
    body: bytes | str | Mapping[str, Any],
    *,
    now: datetime,
    retry_after: str | None = None,
    cert_id: str = "",
) -> RenewalInfo:
    """Parse a RenewalInfo response body (RFC 9773 §4.2).

    ``retry_after`` is the raw ``Retry-After`` header value. Raises
    ``AcmeError`` (code ``ari-invalid``) for anything that is not a valid
    RenewalInfo object, including a window whose end is not after its start,
    which the RFC says to treat as no answer at all.
    """
    now = _aware(now)
    try:
        data: Any = body if isinstance(body, Mapping) else json.loads(body)
        if not isinstance(data, Mapping):
            raise ValueError("the body is not a JSON object")
        window_data = data.get("suggestedWindow")
        if not isinstance(window_data, Mapping):
            raise ValueError("suggestedWindow is missing or not an object")
        window = SuggestedWindow(
            parse_rfc3339(window_data.get("start"), "suggestedWindow.start"),
            parse_rfc3339(window_data.get("end"), "suggestedWindow.end"),
        )
        explanation = data.get("explanationURL")
        if explanation is not None and not isinstance(explanation, str):
            raise ValueError("explanationURL is not a string")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise AcmeError(
            f"invalid renewalInfo response: {exc}", code="ari-invalid", cert_id=cert_id or None
        ) from exc
    return RenewalInfo(
        window=window,
        next_check=clamp_retry_after(parse_retry_after(retry_after, now=now), now=now),
        fetched_at=now,
        cert_id=cert_id,
        explanation_url=explanation,
    )


def discover_renewal_info_url(
    directory_url: str,
    *,
    session: requests.Session | None = None,
    ca_bundle: str | PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str | None:
    """Fetch an ACME directory and return its ``renewalInfo`` URL (None: no ARI).

    For callers that hold only the directory URL; the ACME client, which has
    fetched the directory already, should use :func:`renewal_info_url`.
    Raises ``AcmeError`` (code ``acme-directory-unavailable``) when the
    directory cannot be fetched or is not a JSON object.
    """
    verify = str(ca_bundle) if ca_bundle is not None else certifi.where()
    getter = session.get if session is not None else requests.get
    try:
        response = getter(
            directory_url,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            verify=verify,
            timeout=timeout,
        )
        response.raise_for_status()
        directory = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise AcmeError(
            f"could not fetch the ACME directory {directory_url}: {exc}",
            code="acme-directory-unavailable",
        ) from exc
    if not isinstance(directory, Mapping):
        raise AcmeError(
            f"the ACME directory {directory_url} is not a JSON object",
            code="acme-directory-unavailable",
        )
    return renewal_info_url(directory)


def _read_limited(response: requests.Response) -> bytes:
    """At most ``_MAX_BODY + 1`` bytes of the body: enough to tell it is too big."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=8192):
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_BODY:
            break
    return b"".join(chunks)


def fetch_renewal_info(
    cert: x509.Certificate,
    renewal_info_base: str | None,
    *,
    now: datetime,
    session: requests.Session | None = None,
    ca_bundle: str | PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RenewalInfo | None:
    """Fetch the CA's renewal advice for ``cert``.

    ``renewal_info_base`` is the directory's ``renewalInfo`` URL (see
    :func:`renewal_info_url`); ``ca_bundle`` the PEM file trusted for the
    CA's HTTPS (default: certifi's bundle). ``session`` may be shared by
    calls from one thread (``requests.Session`` is not thread safe); it is
    not modified.

    Returns None, without any request, when the CA has no ARI
    (``renewal_info_base`` is None), when the certificate has expired (RFC
    9773 §4.3: clients stop checking then) or has no Authority Key
    Identifier; and None when the CA answers 404 (it does not know the
    certificate, e.g. it came from another CA). In all these cases the
    lifetime rule applies.

    Raises ``AcmeError`` for failures worth retrying later: code
    ``ari-unavailable`` (connection error, timeout, other HTTP error status;
    ``details["retry_after"]`` holds the server's Retry-After time when it
    sent one) or ``ari-invalid`` (a malformed answer).
    """
    now = _aware(now)
    if renewal_info_base is None:
        return None
    if now >= cert.not_valid_after_utc:
        logger.debug("not fetching renewalInfo for an expired certificate")
        return None
    try:
        ident = cert_id(cert)
    except AcmeError as exc:
        logger.warning("%s; using the lifetime rule", exc)
        return None
    url = f"{renewal_info_base.rstrip('/')}/{ident}"
    verify = str(ca_bundle) if ca_bundle is not None else certifi.where()
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    getter = session.get if session is not None else requests.get
    try:
        response = getter(
            url,
            headers=headers,
            verify=verify,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        with response:
            body = _read_limited(response)
    except requests.RequestException as exc:
        raise AcmeError(
            f"could not fetch renewal information from {url}: {exc}",
            code="ari-unavailable",
            cert_id=ident,
        ) from exc
    if response.status_code == 404:
        logger.info("the CA has no renewal information for %s (404)", ident)
        return None
    if response.status_code != 200:
        retry_at = parse_retry_after(response.headers.get("Retry-After"), now=now)
        raise AcmeError(
            f"renewal information request to {url} failed: HTTP {response.status_code}",
            code="ari-unavailable",
            cert_id=ident,
            status=response.status_code,
            retry_after=retry_at.isoformat() if retry_at else None,
        )
    if len(body) > _MAX_BODY:
        raise AcmeError(
            f"renewal information from {url} is larger than {_MAX_BODY} bytes",
            code="ari-invalid",
            cert_id=ident,
        )
    info = parse_renewal_info(
        body, now=now, retry_after=response.headers.get("Retry-After"), cert_id=ident
    )
    logger.debug(
        "ARI for %s: window %s .. %s, next check %s",
        ident,
        info.window.start.isoformat(),
        info.window.end.isoformat(),
        info.next_check.isoformat(),
    )
    return info


def decide_with_ari(
    cert: x509.Certificate,
    state: RenewalState | None,
    renewal_info_base: str | None,
    *,
    now: datetime,
    session: requests.Session | None = None,
    ca_bundle: str | PathLike[str] | None = None,
    rng: RandomSource | None = None,
    next_run: datetime | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> RenewalDecision:
    """Ask the CA when it is due (if it is time to ask), then decide. Never raises for ARI.

    The one call a renewal loop needs per certificate: renewalInfo is
    fetched only when :func:`~certman.renewal.ari_check_due` says so (the
    CA's ``Retry-After`` is respected, expired certificates are not asked
    about) and not at all with ``force``. A failed fetch is logged and
    postpones the next check (:func:`~certman.renewal.record_ari_error`,
    honouring the server's ``Retry-After``); a CA that does not know the
    certificate (404) is asked again after the default interval. Either way
    the decision falls back on the window remembered in ``state``, else the
    lifetime rule. Persist ``decision.state``.
    """
    now = _aware(now)
    state = state or RenewalState()
    info: RenewalInfo | None = None
    if renewal_info_base is not None and not force and ari_check_due(state, cert, now=now):
        try:
            info = fetch_renewal_info(
                cert,
                renewal_info_base,
                now=now,
                session=session,
                ca_bundle=ca_bundle,
                timeout=timeout,
            )
        except AcmeError as exc:
            logger.warning("%s; using what is known", exc)
            raw = exc.details.get("retry_after")
            retry_at = datetime.fromisoformat(raw) if isinstance(raw, str) else None
            state = record_ari_error(
                state,
                now=now,
                retry_after=clamp_retry_after(retry_at, now=now) if retry_at else None,
            )
        else:
            if info is None:
                state = record_ari_error(state, now=now, retry_after=now + DEFAULT_RETRY_AFTER)
    return decide(cert, info, now=now, state=state, rng=rng, next_run=next_run, force=force)
