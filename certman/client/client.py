"""AcmeClient: one account at one CA, for one thread.

Typical use, issuing for many names from several threads::

    directory = fetch_directory(url, ca_bundle=...)      # once; share it

    def worker(names_list):
        with AcmeClient(directory, account_key, account_url=url) as client:
            for names in names_list:
                client.issue(names, solver)

Thread safety: an ``AcmeClient`` is NOT thread safe (its nonce pool and its
HTTP connection belong to one thread, like ``acme.client.ClientNetwork``).
Create one per worker thread: construction makes no request, the
:class:`Directory` is shared, and each client keeps its connection open
between orders. The account key object may be shared (signing is read-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from types import TracebackType

from certman.challenges.base import Solver
from certman.client import account as _account
from certman.client import order as _order
from certman.client.account import Account, ExternalAccountBinding
from certman.client.directory import Directory, fetch_directory, resolve_directory_url
from certman.client.network import BAD_NONCE_RETRIES, AcmeSession, HttpTransport
from certman.client.order import IssuedCertificate, RevocationReason
from certman.keys import DEFAULT_KEY_TYPE, KeyType, PrivateKey

__all__ = ["AcmeClient"]


class AcmeClient:
    """Talks ACME to one CA with one account key. NOT thread safe: one per thread.

    ``account_url`` is the account's URL when already known (from the
    store); otherwise call :meth:`register` or :meth:`find_account` first.
    ``ca_bundle`` verifies a private CA's HTTPS (default: certifi's bundle,
    never ``REQUESTS_CA_BUNDLE`` implicitly). ``timeout`` is per HTTP request;
    ``bad_nonce_retries`` bounds ``badNonce`` retries per request.
    """

    def __init__(
        self,
        directory: Directory,
        account_key: PrivateKey,
        *,
        account_url: str | None = None,
        ca_bundle: str | PathLike[str] | None = None,
        timeout: float = 10.0,
        bad_nonce_retries: int = BAD_NONCE_RETRIES,
    ) -> None:
        self.directory = directory
        self.ca_bundle = ca_bundle
        self._session = AcmeSession(
            directory.new_nonce,
            account_key,
            account_url=account_url,
            transport=HttpTransport(ca_bundle=ca_bundle, timeout=timeout),
            bad_nonce_retries=bad_nonce_retries,
        )

    @classmethod
    def connect(
        cls,
        account_key: PrivateKey,
        server: str | None = None,
        *,
        staging: bool = False,
        account_url: str | None = None,
        ca_bundle: str | PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> AcmeClient:
        """Fetch the directory of ``server`` (a URL or preset; default Let's
        Encrypt production, ``staging`` for its staging CA) and make a client.

        When several threads are involved, fetch the directory once with
        :func:`fetch_directory` and build one client per thread instead.
        """
        url = resolve_directory_url(server, staging=staging)
        directory = fetch_directory(url, ca_bundle=ca_bundle, timeout=timeout)
        return cls(
            directory, account_key, account_url=account_url, ca_bundle=ca_bundle, timeout=timeout
        )

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connection(s)."""
        self._session.close()

    def __enter__(self) -> AcmeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state ---------------------------------------------------------------

    @property
    def account_url(self) -> str | None:
        """The account URL (``kid``) in use, once known."""
        return self._session.account_url

    @property
    def account_key(self) -> PrivateKey:
        """The account key in use (changes after :meth:`rollover`)."""
        return self._session.key

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (for benchmarks and logs)."""
        return self._session.transport.request_count

    @property
    def bad_nonce_count(self) -> int:
        """``badNonce`` answers retried so far."""
        return self._session.bad_nonce_count

    # -- accounts ------------------------------------------------------------

    def register(
        self,
        *,
        agree_tos: bool,
        email: Iterable[str] | str | None = None,
        eab: ExternalAccountBinding | None = None,
    ) -> Account:
        """Create the account for this key (see :func:`certman.client.account.register`)."""
        return _account.register(
            self._session, self.directory, agree_tos=agree_tos, email=email, eab=eab
        )

    def find_account(self) -> Account:
        """The existing account of this key (``acme-account-does-not-exist`` if none)."""
        return _account.find(self._session, self.directory)

    def account(self) -> Account:
        """The account's current state as the CA sees it."""
        return _account.fetch(self._session, self.directory)

    def update_contact(self, email: Iterable[str] | str | None) -> Account:
        """Replace the account's e-mail contacts (``None`` removes them)."""
        return _account.update_contact(self._session, self.directory, email)

    def rollover(self, new_key: PrivateKey) -> Account:
        """Switch the account to ``new_key`` (RFC 8555 §7.3.5). Persist it first."""
        return _account.rollover(self._session, self.directory, new_key)

    def deactivate(self) -> Account:
        """Deactivate the account permanently."""
        return _account.deactivate(self._session, self.directory)

    # -- certificates --------------------------------------------------------

    def issue(
        self,
        names: Sequence[str],
        solver: Solver,
        *,
        private_key: PrivateKey | None = None,
        key_type: KeyType | str = DEFAULT_KEY_TYPE,
        profile: str | None = None,
        preferred_chain: str | None = None,
        replaces: str | None = None,
        timeout: float = 120.0,
    ) -> IssuedCertificate:
        """Get a certificate for ``names`` (see :func:`certman.client.order.issue`)."""
        return _order.issue(
            self._session,
            self.directory,
            names,
            solver,
            private_key=private_key,
            key_type=key_type,
            profile=profile,
            preferred_chain=preferred_chain,
            replaces=replaces,
            timeout=timeout,
        )

    def revoke(
        self,
        cert_pem: str | bytes,
        *,
        reason: RevocationReason | int | str = RevocationReason.UNSPECIFIED,
        cert_key: PrivateKey | None = None,
    ) -> None:
        """Revoke with the account key, or with ``cert_key`` (the certificate's own)."""
        _order.revoke(self._session, self.directory, cert_pem, reason=reason, cert_key=cert_key)

    def __repr__(self) -> str:
        return f"<AcmeClient {self.directory.url} account={self.account_url}>"
