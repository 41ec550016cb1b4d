"""certman.inspector: read certificates someone else made, and judge them.

Load bundles (:func:`load_bundle`), inspect one (:func:`inspect`) or a fleet
(:func:`scan`), render reports (:mod:`certman.inspector.report`). Rules live
in :mod:`certman.inspector.rules` (``RULES``), distrust data in
:mod:`certman.inspector.distrust`. Never touches ACME.
"""

from certman.inspector.chain import (
    ChainAnalysis,
    Link,
    LinkStatus,
    TrustStore,
    analyze_chain,
    default_trust_store,
    strict_verify,
)
from certman.inspector.distrust import EVENTS, DistrustEvent, load_distrust_file, user_event
from certman.inspector.inspection import InspectOptions, inspect
from certman.inspector.load import Bundle, load_bundle, load_ders, load_file, load_private_key
from certman.inspector.model import (
    CertificateInfo,
    Finding,
    KeyInfo,
    Report,
    ScanResult,
    Severity,
)
from certman.inspector.rules import RULES, Rule, RuleContext, rule
from certman.inspector.scan import inspect_source, scan, scan_map
from certman.inspector.sources import (
    BytesSource,
    FileSource,
    RawChain,
    Source,
    iter_sources,
    load_raw,
)

__all__ = [
    "EVENTS",
    "RULES",
    "Bundle",
    "BytesSource",
    "CertificateInfo",
    "ChainAnalysis",
    "DistrustEvent",
    "FileSource",
    "Finding",
    "InspectOptions",
    "KeyInfo",
    "Link",
    "LinkStatus",
    "RawChain",
    "Report",
    "Rule",
    "RuleContext",
    "ScanResult",
    "Severity",
    "Source",
    "TrustStore",
    "analyze_chain",
    "default_trust_store",
    "inspect",
    "inspect_source",
    "iter_sources",
    "load_bundle",
    "load_ders",
    "load_distrust_file",
    "load_file",
    "load_private_key",
    "load_raw",
    "rule",
    "scan",
    "scan_map",
    "strict_verify",
    "user_event",
]
