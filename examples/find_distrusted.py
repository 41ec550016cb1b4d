"""Which customers are on distrusted CAs? Customer rows in SQLite, through the library.

The hosting-company question: every customer's certificate is a PEM string
in a database table ``customers(domain, cert_pem)``. Stream the rows into
``certman.scan`` (parallel, memory stays flat) and list the customers whose
chain leads to a CA that browsers distrust (StartCom, WoSign, Symantec,
Entrust, ...), plus rows that could not be read at all.

    python examples/find_distrusted.py customers.sqlite
    python examples/find_distrusted.py --demo          # builds a small demo database

Extra bad issuers of your own: ``--distrust "O=Example CA"`` (repeatable).
Exit status: 0 nobody affected, 1 some customers affected or unreadable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import certman
from certman.inspector import EVENTS, user_event


def rows(db: sqlite3.Connection, table: str) -> Iterator[tuple[str, str]]:
    """(domain, pem) rows, fetched lazily: a million rows never sit in memory."""
    cursor = db.execute(f"SELECT domain, cert_pem FROM {table}")  # table is the CLI's own argument
    while batch := cursor.fetchmany(1000):
        yield from batch


def find(db_path: str, table: str, distrust: list[str], workers: int | None) -> int:
    options = certman.InspectOptions(
        rules=frozenset({"distrusted-ca"}),
        distrust=(*EVENTS, *(user_event(p) for p in distrust)),
    )
    affected = unreadable = total = 0
    with sqlite3.connect(db_path) as db:
        for result in certman.scan(rows(db, table), options=options, workers=workers):
            total += 1
            if result.report is None:
                unreadable += 1
                print(f"{result.source}: unreadable certificate ({result.error_code})")
                continue
            for finding in result.report.findings:
                affected += 1
                issuer = result.report.leaf.issuer
                print(f"{result.source}: {issuer}\n    {finding.message}")
    print(f"\n{total} customers checked: {affected} on distrusted CAs, {unreadable} unreadable")
    return 1 if affected or unreadable else 0


def build_demo(path: Path) -> None:
    """A small database: clean customers, a StartCom one, a post-cutoff Entrust one, junk."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def cert(subject: x509.Name, issuer: x509.Name, key, signer, start, days, ca=False):  # type: ignore[no-untyped-def]
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject.rfc4514_string()[3:])]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    customers: list[tuple[str, str]] = []
    for org, ca_name, start in [
        ("Demo Trust Services", "Demo TLS CA", now - dt.timedelta(days=10)),
        ("StartCom Ltd.", "StartCom Class 1 DV Server CA", dt.datetime(2017, 3, 1, tzinfo=dt.UTC)),
        (
            "Entrust, Inc.",
            "Entrust Certification Authority - L1K",
            dt.datetime(2024, 12, 5, tzinfo=dt.UTC),
        ),
    ]:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = cert(
            name(ca_name, org),
            name(ca_name, org),
            ca_key,
            ca_key,
            start - dt.timedelta(days=900),
            3650,
            ca=True,
        )
        for n in range(3):
            domain = f"shop{n}.{org.split()[0].lower().strip(',')}.example"
            key = ec.generate_private_key(ec.SECP256R1())
            leaf = cert(name(domain), ca.subject, key, ca_key, start, 365)
            customers.append((domain, (leaf.public_bytes(pem) + ca.public_bytes(pem)).decode()))
    customers.append(("broken.example", "-----BEGIN CERTIFICATE-----\nMIIB"))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (domain TEXT PRIMARY KEY, cert_pem TEXT)")
        db.executemany("INSERT INTO customers VALUES (?, ?)", customers)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("database", nargs="?", help="SQLite file with customers(domain, cert_pem)")
    parser.add_argument("--table", default="customers")
    parser.add_argument("--distrust", action="append", default=[], metavar="'O=Example CA'")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--demo", action="store_true", help="build and use a demo database")
    args = parser.parse_args()
    if not args.table.isidentifier():
        parser.error("--table must be a plain table name")
    if args.demo:
        tmp = Path(tempfile.mkdtemp(prefix="certman-demo-")) / "customers.sqlite"
        build_demo(tmp)
        args.database = str(tmp)
    if not args.database:
        parser.error("give a database file, or --demo")
    return find(args.database, args.table, args.distrust, args.workers)


if __name__ == "__main__":
    sys.exit(main())
