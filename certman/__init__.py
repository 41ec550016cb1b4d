"""certman: Let's Encrypt (ACME) certificates, issued, renewed and inspected.

The public API is exactly what ``__all__`` lists; everything else (modules
whose names start with ``_``, and names not listed here) may change without
notice. A test keeps this list honest.
"""

from certman._version import __version__
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
from certman.errors import (
    AcmeError,
    CertmanError,
    ChallengeError,
    ConfigError,
    InspectorError,
    RenewalError,
    StoreError,
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
