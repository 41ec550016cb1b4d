"""HTTP and signed ACME requests: connections, nonces, retries, problem documents.

Why not ``acme.client.ClientNetwork``: it retries ``badNonce`` only once
(Pebble rejects 5% of nonces on purpose, and Let's Encrypt may reject some
too, so a batch of a hundred orders would fail), ignores ``Retry-After``,
lets ``REQUESTS_CA_BUNDLE`` override ``verify=True``, and mutates its
``account`` during lookups. :class:`AcmeSession` is a small replacement that
still uses ``acme.jws`` and ``josepy`` for the JWS itself.

Thread safety: an :class:`AcmeSession` (like ``ClientNetwork``) is NOT thread
safe — its nonce pool and its ``requests.Session`` belong to one thread. Make
one per worker thread; they are cheap (no request until first use). The
:class:`~certman.client.directory.Directory` they are built from is
immutable and can be shared.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from typing import Any

import certifi
import requests
import requests.utils
from acme import jws as acme_jws
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.b64 import b64encode
from josepy.json_util import decode_b64jose
from josepy.jwa import ES256, ES384, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from certman._version import __version__
from certman.errors import AcmeError
from certman.keys import PrivateKey

__all__ = [
    "USER_AGENT",
    "AcmeResponse",
    "AcmeSession",
    "HttpTransport",
    "jwk_thumbprint",
    "problem_error",
]

log = logging.getLogger(__name__)

USER_AGENT = f"certman/{__version__}"
"""The only thing certman says about itself to a CA."""

ERROR_PREFIX = "urn:ietf:params:acme:error:"
JOSE_CONTENT_TYPE = "application/jose+json"
PEM_CHAIN_CONTENT_TYPE = "application/pem-certificate-chain"


def _kebab(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("-" + ch.lower())
        else:
            out.append(ch)
    return "".join(out).strip("-")


def problem_error(
    data: Any,
    *,
    status: int | None = None,
    url: str | None = None,
    context: str = "",
    identifier: str | None = None,
) -> AcmeError:
    """Turn an RFC 7807 / RFC 8555 §6.7 problem document into an ``AcmeError``.

    The code is ``acme-`` plus the kebab-cased ACME error type
    (``rejectedIdentifier`` -> ``acme-rejected-identifier``), or
    ``acme-problem`` for a non-ACME type. Subproblems (one per identifier)
    are folded into the message; the first one's identifier is used when the
    top-level problem names none, and ``identifier`` (what the caller was
    working on) when neither does.
    """
    if not isinstance(data, dict):
        data = {}
    ptype = str(data.get("type") or "about:blank")
    detail = data.get("detail")
    detail = None if detail is None else str(detail)
    given = identifier
    identifier = _identifier_value(data.get("identifier"))
    subs = [s for s in (data.get("subproblems") or []) if isinstance(s, dict)]
    if identifier is None and subs:
        identifier = _identifier_value(subs[0].get("identifier"))
    if identifier is None:
        identifier = given
    short = ptype[len(ERROR_PREFIX) :] if ptype.startswith(ERROR_PREFIX) else None
    code = f"acme-{_kebab(short)}" if short else "acme-problem"
    text = detail or (short or ptype)
    if identifier and identifier not in text:
        text = f"{identifier}: {text}"
    for sub in subs:
        sub_id = _identifier_value(sub.get("identifier"))
        sub_detail = str(sub.get("detail") or sub.get("type") or "")
        if sub_detail and sub_detail not in text:
            text += f"; {sub_id + ': ' if sub_id else ''}{sub_detail}"
    prefix = f"{context}: " if context else ""
    message = f"{prefix}{text} ({short or ptype})".replace("\n", " ")
    return AcmeError(
        message,
        code=code,
        problem_type=ptype,
        detail=detail,
        identifier=identifier,
        status=status,
        url=url,
        subproblems=[
            {
                "type": s.get("type"),
                "detail": s.get("detail"),
                "identifier": _identifier_value(s.get("identifier")),
            }
            for s in subs
        ]
        or None,
    )


def _identifier_value(obj: Any) -> str | None:
    if isinstance(obj, dict) and obj.get("value") is not None:
        return str(obj["value"])
    return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class AcmeResponse:
    """What certman keeps of an HTTP response: status, headers, body, links."""

    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes = field(repr=False)

    def json(self) -> Any:
        """The body as JSON; ``AcmeError`` (``acme-bad-response``) if it is not."""
        try:
            return json.loads(self.content)
        except ValueError:
            raise AcmeError(
                f"{self.url} answered with something that is not JSON",
                code="acme-bad-response",
                url=self.url,
            ) from None

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    @property
    def retry_after(self) -> float | None:
        """Seconds from the ``Retry-After`` header, if any."""
        return parse_retry_after(self.headers.get("Retry-After"))

    def links(self, rel: str) -> list[str]:
        """Every ``Link`` URL with relation ``rel`` (there may be several)."""
        header = self.headers.get("Link")
        if not header:
            return []
        return [
            link["url"]
            for link in requests.utils.parse_header_links(header)
            if link.get("rel") == rel and "url" in link
        ]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpTransport:
    """A ``requests.Session`` with certman's TLS, User-Agent and error rules.

    - ``verify`` is always passed explicitly: the given ``ca_bundle``, else
      certifi's bundle (``verify=True`` would let ``REQUESTS_CA_BUNDLE``
      in the environment replace it silently).
    - The User-Agent is ``certman/<version>``; nothing about the host.
    - Network failures become ``AcmeError`` (``acme-unreachable``,
      ``acme-tls``, ``acme-timeout``) with a one-line message.
    - Requests are retried once after a connection reset (keep-alive
      connections see one when the server closed them): GET/HEAD by default,
      signed POSTs too (see :meth:`AcmeSession.post`).

    Not thread safe (one ``requests.Session``): one per thread.
    """

    def __init__(
        self,
        *,
        ca_bundle: str | PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.verify: str = str(ca_bundle) if ca_bundle is not None else certifi.where()
        self.ca_bundle_given = ca_bundle is not None
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self.request_count = 0

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry_reset: bool | None = None,
    ) -> AcmeResponse:
        """Send one request; return the response whatever its status."""
        retry = method in ("GET", "HEAD") if retry_reset is None else retry_reset
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                self.request_count += 1
                resp = self._session.request(
                    method,
                    url,
                    data=data,
                    headers=dict(headers or {}),
                    verify=self.verify,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
                return AcmeResponse(
                    url=url, status=resp.status_code, headers=resp.headers, content=resp.content
                )
            except requests.exceptions.SSLError as exc:
                hint = "" if self.ca_bundle_given else " (a private CA needs --ca-bundle)"
                raise AcmeError(
                    f"TLS verification of {_origin(url)} failed{hint}: {_short(exc)}",
                    code="acme-tls",
                    url=url,
                ) from None
            except requests.exceptions.Timeout:
                raise AcmeError(
                    f"{_origin(url)} did not answer within {self.timeout:g} s",
                    code="acme-timeout",
                    url=url,
                ) from None
            except requests.exceptions.ConnectionError as exc:
                if attempt + 1 < attempts:
                    log.debug("connection error on %s %s, retrying: %s", method, url, exc)
                    continue
                raise AcmeError(
                    f"cannot reach the ACME server at {_origin(url)}: {_short(exc)}",
                    code="acme-unreachable",
                    url=url,
                ) from None
            except requests.exceptions.RequestException as exc:
                raise AcmeError(
                    f"request to {url} failed: {_short(exc)}", code="acme-unreachable", url=url
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, url: str) -> Any:
        """GET a JSON resource; a problem document becomes ``AcmeError``."""
        resp = self.request("GET", url)
        if not resp.ok:
            raise _error_from_response(resp)
        return resp.json()


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _short(exc: BaseException) -> str:
    """A one-line reason out of requests' nested exception texts."""
    text = str(exc)
    for marker in ("Failed to establish a new connection: ", "SSLError(", "] "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.split("'))")[0].split("\n")[0]
    text = re.sub(r"\s*\(_ssl\.c:\d+\)?", "", text)
    return text.strip("()'\" ")[:200]


def _error_from_response(resp: AcmeResponse, context: str = "") -> AcmeError:
    try:
        data = json.loads(resp.content)
    except ValueError:
        data = None
    if isinstance(data, dict) and "type" in data:
        return problem_error(data, status=resp.status, url=resp.url, context=context)
    prefix = f"{context}: " if context else ""
    return AcmeError(
        f"{prefix}{resp.url} answered HTTP {resp.status}",
        code="acme-http-error",
        status=resp.status,
        url=resp.url,
    )


def _jwk_and_alg(key: PrivateKey) -> tuple[JWK, JWASignature]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return JWKEC(key=key), ES256
        if isinstance(key.curve, ec.SECP384R1):
            return JWKEC(key=key), ES384
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    raise AcmeError("unsupported account key type", code="acme-unsupported-key")


def jwk_thumbprint(key: PrivateKey) -> str:
    """The base64url SHA-256 JWK thumbprint (RFC 7638) of ``key``'s public half."""
    jwk, _ = _jwk_and_alg(key)
    thumb: bytes = jwk.public_key().thumbprint()
    return str(b64encode(thumb).decode())


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    """The public JWK of ``key`` as a JSON object."""
    jwk, _ = _jwk_and_alg(key)
    data: dict[str, Any] = jwk.public_key().to_partial_json()
    return data


def sign_jws(
    payload: bytes,
    key: PrivateKey,
    *,
    url: str,
    nonce: str | None,
    kid: str | None,
) -> dict[str, Any]:
    """A flattened JWS (RFC 8555 §6.2): ``kid`` when given, else the ``jwk``."""
    jwk, alg = _jwk_and_alg(key)
    signed = acme_jws.JWS.sign(
        payload,
        key=jwk,
        alg=alg,
        nonce=None if nonce is None else decode_b64jose(nonce),
        url=url,
        kid=kid,
    )
    data: dict[str, Any] = signed.to_partial_json(flat=True)
    return data


BAD_NONCE_RETRIES = 30
"""Default bound on ``badNonce`` retries per request.

A request fails when the CA rejects a nonce ``n + 1`` times in a row. At a
rejection rate ``r`` that is ``r ** (n + 1)``; a certificate takes about 15
signed requests. At Pebble's ``PEBBLE_WFE_NONCEREJECT=50``, 10 retries lost
about one certificate in 100 (tests/faults); 30 make it ~1e-8 per certificate,
and against a CA that always says ``badNonce`` it is still 31 quick requests.
"""


class AcmeSession:
    """Signed ACME requests for one account key, from one thread.

    - Nonces from every response are kept and reused (no ``newNonce`` round
      trip per request).
    - ``badNonce`` is retried up to ``bad_nonce_retries`` times, each with
      the nonce the error itself carried.
    - ``rateLimited`` / 503 answers with a ``Retry-After`` of at most
      ``max_retry_after`` seconds are waited out and retried (twice at most);
      longer ones raise at once with ``retry_after`` in the error details.
    - A problem document becomes ``AcmeError`` (see :func:`problem_error`).

    ``account_url`` is the account's ``kid``: requests are signed with it
    once set, with the public JWK before (new-account, find-by-key).

    NOT thread safe: one per thread.
    """

    def __init__(
        self,
        directory_new_nonce: str,
        key: PrivateKey,
        *,
        account_url: str | None = None,
        transport: HttpTransport | None = None,
        ca_bundle: str | PathLike[str] | None = None,
        timeout: float = 10.0,
        bad_nonce_retries: int = BAD_NONCE_RETRIES,
        max_retry_after: float = 30.0,
    ) -> None:
        self.new_nonce_url = directory_new_nonce
        self.key = key
        self.account_url = account_url
        self.transport = transport or HttpTransport(ca_bundle=ca_bundle, timeout=timeout)
        self.bad_nonce_retries = bad_nonce_retries
        self.max_retry_after = max_retry_after
        self._nonces: list[str] = []
        self.bad_nonce_count = 0

    def close(self) -> None:
        self.transport.close()

    # -- nonces --------------------------------------------------------------

    def _keep_nonce(self, resp: AcmeResponse) -> None:
        nonce = resp.headers.get("Replay-Nonce")
        if nonce:
            self._nonces.append(nonce)

    def _nonce(self) -> str:
        if self._nonces:
            return self._nonces.pop()
        resp = self.transport.request("HEAD", self.new_nonce_url)
        nonce = resp.headers.get("Replay-Nonce")
        if not nonce:
            raise AcmeError(
                f"{self.new_nonce_url} gave no Replay-Nonce (HTTP {resp.status})",
                code="acme-bad-response",
                url=self.new_nonce_url,
            )
        return nonce

    # -- requests ------------------------------------------------------------

    def post(
        self,
        url: str,
        payload: Mapping[str, Any] | None,
        *,
        sign_key: PrivateKey | None = None,
        use_jwk: bool = False,
        accept: str | None = None,
        context: str = "",
        deadline: float | None = None,
    ) -> AcmeResponse:
        """POST a signed ``payload`` (``None`` = POST-as-GET) and return a 2xx answer.

        ``sign_key`` signs with another key and its JWK (revocation by
        certificate key); ``use_jwk`` signs with the account key's JWK
        instead of the ``kid``. ``deadline`` (``time.monotonic()``) bounds
        waits for ``Retry-After``. Raises ``AcmeError`` for any non-2xx.
        """
        body = b"" if payload is None else json.dumps(payload).encode()
        key = sign_key or self.key
        kid = None if (sign_key is not None or use_jwk) else self.account_url
        headers = {"Content-Type": JOSE_CONTENT_TYPE}
        if accept:
            headers["Accept"] = accept
        bad_nonces = 0
        waits = 0
        while True:
            jws = sign_jws(body, key, url=url, nonce=self._nonce(), kid=kid)
            resp = self.transport.request(
                "POST",
                url,
                data=json.dumps(jws).encode(),
                headers=headers,
                # Resending the very same JWS after a connection reset is safe
                # for any POST: if the first copy reached the CA, its nonce is
                # spent and the copy is refused as badNonce (then re-signed).
                retry_reset=True,
            )
            self._keep_nonce(resp)
            if resp.ok:
                return resp
            error = _error_from_response(resp, context)
            if error.code == "acme-bad-nonce" and bad_nonces < self.bad_nonce_retries:
                bad_nonces += 1
                self.bad_nonce_count += 1
                log.debug("badNonce from %s, retry %d", url, bad_nonces)
                continue
            wait = resp.retry_after
            if resp.status in (429, 503) and wait is not None:
                error.details["retry_after"] = wait
                fits = deadline is None or time.monotonic() + wait < deadline
                if wait <= self.max_retry_after and fits and waits < 2:
                    waits += 1
                    log.info("%s asks to retry after %.0f s", _origin(url), wait)
                    time.sleep(wait)
                    continue
            raise error

    def post_as_get(
        self, url: str, *, accept: str | None = None, context: str = ""
    ) -> AcmeResponse:
        """POST-as-GET (RFC 8555 §6.3) of ``url``."""
        return self.post(url, None, accept=accept, context=context)
