"""certman: Let's Encrypt (ACME) certificates, issued, renewed and inspected.

The public API is exactly what ``__all__`` lists; everything else (modules
whose names start with ``_``, and names not listed here) may change without
notice. A test keeps this list honest.

Names are imported lazily (PEP 562): ``certman scan`` and ``certman list``
should not pay for importing the ACME stack, and worker processes of a fleet
scan should not carry it in memory. ``from certman import X`` and
``certman.X`` work as usual; type checkers see ordinary imports.
"""

import importlib as _importlib
import typing as _typing

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

if _typing.TYPE_CHECKING:
    from certman.challenges import (
        ChallengeMiddleware,
        ChallengeTask,
        DnsHookSolver,
        HTTP01Server,
        MemoryTokenStore,
        Solver,
        StandaloneSolver,
        StoreTokenStore,
        TokenStore,
        TokenStoreSolver,
        WebrootSolver,
        make_wsgi_app,
    )
    from certman.client import (
        Account,
        AcmeClient,
        Directory,
        ExternalAccountBinding,
        IssuedCertificate,
        RevocationReason,
        fetch_directory,
    )
    from certman.hooks import HookResult, HookSession
    from certman.inspector import (
        Bundle,
        CertificateInfo,
        Finding,
        InspectOptions,
        Report,
        ScanResult,
        Severity,
        inspect,
        load_bundle,
        scan,
    )
    from certman.inspector.aia import AiaFetcher
    from certman.inspector.endpoints import Endpoint, fetch_chains, parse_endpoint, scan_endpoints
    from certman.inspector.repair import repair_chain
    from certman.keys import KeyType
    from certman.manager import (
        CertificateManager,
        CertificateStatus,
        IssueRequest,
        Outcome,
        RateLimits,
        RunReport,
        SolverSpec,
    )
    from certman.metrics import CertificateMetrics
    from certman.renewal import RenewalDecision, RenewalInfo, RenewalState
    from certman.store import (
        AccountRecord,
        CertificateFiles,
        CertificateMeta,
        CertificateVersion,
        FileStore,
        Store,
    )

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Account": "certman.client",
    "AccountRecord": "certman.store",
    "AcmeClient": "certman.client",
    "AiaFetcher": "certman.inspector.aia",
    "Bundle": "certman.inspector",
    "CertificateFiles": "certman.store",
    "CertificateInfo": "certman.inspector",
    "CertificateManager": "certman.manager",
    "CertificateMeta": "certman.store",
    "CertificateMetrics": "certman.metrics",
    "CertificateStatus": "certman.manager",
    "CertificateVersion": "certman.store",
    "ChallengeMiddleware": "certman.challenges",
    "ChallengeTask": "certman.challenges",
    "Directory": "certman.client",
    "DnsHookSolver": "certman.challenges",
    "Endpoint": "certman.inspector.endpoints",
    "ExternalAccountBinding": "certman.client",
    "FileStore": "certman.store",
    "Finding": "certman.inspector",
    "HTTP01Server": "certman.challenges",
    "HookResult": "certman.hooks",
    "HookSession": "certman.hooks",
    "InspectOptions": "certman.inspector",
    "IssueRequest": "certman.manager",
    "IssuedCertificate": "certman.client",
    "KeyType": "certman.keys",
    "MemoryTokenStore": "certman.challenges",
    "Outcome": "certman.manager",
    "RateLimits": "certman.manager",
    "RenewalDecision": "certman.renewal",
    "RenewalInfo": "certman.renewal",
    "RenewalState": "certman.renewal",
    "Report": "certman.inspector",
    "RevocationReason": "certman.client",
    "RunReport": "certman.manager",
    "ScanResult": "certman.inspector",
    "Severity": "certman.inspector",
    "Solver": "certman.challenges",
    "SolverSpec": "certman.manager",
    "StandaloneSolver": "certman.challenges",
    "Store": "certman.store",
    "StoreTokenStore": "certman.challenges",
    "TokenStore": "certman.challenges",
    "TokenStoreSolver": "certman.challenges",
    "WebrootSolver": "certman.challenges",
    "fetch_chains": "certman.inspector.endpoints",
    "fetch_directory": "certman.client",
    "inspect": "certman.inspector",
    "load_bundle": "certman.inspector",
    "make_wsgi_app": "certman.challenges",
    "parse_endpoint": "certman.inspector.endpoints",
    "repair_chain": "certman.inspector.repair",
    "scan": "certman.inspector",
    "scan_endpoints": "certman.inspector.endpoints",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'certman' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Account",
    "AccountRecord",
    "AcmeClient",
    "AcmeError",
    "AiaFetcher",
    "Bundle",
    "CertificateFiles",
    "CertificateInfo",
    "CertificateManager",
    "CertificateMeta",
    "CertificateMetrics",
    "CertificateStatus",
    "CertificateVersion",
    "CertmanError",
    "ChallengeError",
    "ChallengeMiddleware",
    "ChallengeTask",
    "ConfigError",
    "Directory",
    "DnsHookSolver",
    "Endpoint",
    "ExternalAccountBinding",
    "FileStore",
    "Finding",
    "HTTP01Server",
    "HookResult",
    "HookSession",
    "InspectOptions",
    "InspectorError",
    "IssueRequest",
    "IssuedCertificate",
    "KeyType",
    "MemoryTokenStore",
    "Outcome",
    "RateLimits",
    "RenewalDecision",
    "RenewalError",
    "RenewalInfo",
    "RenewalState",
    "Report",
    "RevocationReason",
    "RunReport",
    "ScanResult",
    "Severity",
    "Solver",
    "SolverSpec",
    "StandaloneSolver",
    "Store",
    "StoreError",
    "StoreTokenStore",
    "TokenStore",
    "TokenStoreSolver",
    "WebrootSolver",
    "__version__",
    "fetch_chains",
    "fetch_directory",
    "inspect",
    "load_bundle",
    "make_wsgi_app",
    "parse_endpoint",
    "repair_chain",
    "scan",
    "scan_endpoints",
]
