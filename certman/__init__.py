"""certman: Let's Encrypt (ACME) certificates, issued, renewed and inspected.

The public API is exactly what ``__all__`` lists; everything else (modules
whose names start with ``_``, and names not listed here) may change without
notice. A test keeps this list honest.
"""

from certman._version import __version__
from certman.challenges import (
    ChallengeTask,
    MemoryTokenStore,
    Solver,
    StoreTokenStore,
    TokenStore,
    TokenStoreSolver,
)
from certman.errors import (
    AcmeError,
    CertmanError,
    ChallengeError,
    ConfigError,
    InspectorError,
    RenewalError,
    StoreError,
)
from certman.store import (
    AccountRecord,
    CertificateFiles,
    CertificateMeta,
    CertificateVersion,
    FileStore,
    Store,
)

__all__ = [
    "AccountRecord",
    "AcmeError",
    "CertificateFiles",
    "CertificateMeta",
    "CertificateVersion",
    "CertmanError",
    "ChallengeError",
    "ChallengeTask",
    "ConfigError",
    "FileStore",
    "InspectorError",
    "MemoryTokenStore",
    "RenewalError",
    "Solver",
    "Store",
    "StoreError",
    "StoreTokenStore",
    "TokenStore",
    "TokenStoreSolver",
    "__version__",
]
