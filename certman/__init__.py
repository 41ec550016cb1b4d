"""certman: Let's Encrypt (ACME) certificates, issued, renewed and inspected.

The public API is exactly what ``__all__`` lists; everything else (modules
whose names start with ``_``, and names not listed here) may change without
notice. A test keeps this list honest.
"""

from certman._version import __version__
from certman.errors import (
    AcmeError,
    CertmanError,
    ChallengeError,
    ConfigError,
    InspectorError,
    RenewalError,
    StoreError,
)

__all__ = [
    "AcmeError",
    "CertmanError",
    "ChallengeError",
    "ConfigError",
    "InspectorError",
    "RenewalError",
    "StoreError",
    "__version__",
]
