"""`certman scan` / `certman inspect` on live endpoints and `--fix`, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from endpoint_helpers import AiaServer, Pki, TlsServer, make_cert, refused_port

Serve = Callable[..., TlsServer]


def certman(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "certman", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def roots(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("roots") / "roots.pem"
    path.write_bytes(pki.root.pem)
    return str(path)


def jsonl(out: str) -> dict[str, dict]:  # type: ignore[type-arg]
    objs = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {o["source"]: o for o in objs}


def test_scan_endpoints_from_args_flags_and_file(
    pki: Pki, serve: Serve, roots: str, tmp_path: Path
) -> None:
    good = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    lonely = serve(chain=[pki.leaf.cert], key=pki.leaf.key)
    smtp = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key, starttls="smtp")
    dead = refused_port()
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(
        "# customers\n"
        f"shop.customer.example 127.0.0.1:{good.port}\n"
        f"smtp://localhost:{smtp.port}\n"
        "not a valid line at all\n"
    )
    proc = certman(
        "scan",
        f"localhost:{good.port}",
        "--endpoint",
        f"127.0.0.1:{dead}",
        "--endpoint",
        f"https://localhost:{lonely.port}/",
        "--endpoints-file",
        str(hosts),
        "--trust-store",
        roots,
        "--format",
        "jsonl",
        "--timeout",
        "5",
    )
    assert proc.returncode == 1, proc.stderr
    got = jsonl(proc.stdout)
    assert got[f"localhost:{good.port}"]["status"] == "ok"
    assert got[f"localhost:{good.port}"]["findings"] == []
    assert got[f"127.0.0.1:{dead}"]["error_code"] == "endpoint-refused"
    assert [f["rule"] for f in got[f"localhost:{lonely.port}"]["findings"]] == [
        "missing-intermediate"
    ]
    mismatch = got[f"shop.customer.example:443 via 127.0.0.1:{good.port}"]
    assert [f["rule"] for f in mismatch["findings"]] == ["hostname-mismatch"]
    assert got[f"smtp://localhost:{smtp.port}"]["status"] == "ok"
    assert got["not a valid line at all"]["error_code"] == "endpoint-bad-spec"
    assert len(got) == 6


def test_scan_endpoints_from_stdin_table(pki: Pki, serve: Serve, roots: str) -> None:
    good = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    proc = certman(
        "scan",
        "--endpoints-file",
        "-",
        "--trust-store",
        roots,
        "--fail-on",
        "critical",
        stdin=f"localhost:{good.port}\nlocalhost:{good.port}\n",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2" in proc.stdout  # the summary counts both


def test_files_and_endpoints_together_and_existing_files_win(
    pki: Pki, serve: Serve, roots: str, tmp_path: Path
) -> None:
    good = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    # A file whose name looks like an endpoint is a file.
    (tmp_path / f"localhost:{good.port}").write_bytes(pki.leaf.pem)
    (tmp_path / "chain.pem").write_bytes(pki.leaf.pem + pki.intermediate.pem)
    proc = certman(
        "scan",
        f"localhost:{good.port}",
        "chain.pem",
        f"https://localhost:{good.port}",
        "example.org",  # a bare name is a path: never contacted
        "--trust-store",
        roots,
        "--json",
        cwd=tmp_path,
    )
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(objs) == 4
    # The file named like an endpoint, then the https:// endpoint (same label).
    same = [o for o in objs if o["source"] == f"localhost:{good.port}"]
    assert sorted(len(o["certificates"]) for o in same) == [1, 2]
    by_count = {len(o["certificates"]): o for o in same}
    assert by_count[1]["findings"][0]["rule"] == "missing-intermediate"  # the file: leaf only
    assert by_count[2]["findings"] == []  # the server sends leaf + intermediate
    got = {o["source"]: o for o in objs}
    assert got["chain.pem"]["findings"] == []
    assert got["example.org"]["status"] == "error"
    assert not got["example.org"]["error_code"].startswith("endpoint-")


def test_usage_errors() -> None:
    assert certman("scan").returncode == 2
    proc = certman("scan", "--endpoint", "x.example", "--connect-to", "http://nope/")
    assert proc.returncode == 2
    assert "[endpoint-bad-connect-to]" in proc.stderr
    assert certman("inspect").returncode == 2
    assert certman("inspect", "--endpoint", "bad host!").returncode == 2
    assert certman("scan", "-", "--endpoints-file", "-", stdin="").returncode == 2


def test_inspect_endpoint_text_and_json(pki: Pki, serve: Serve, roots: str) -> None:
    server = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key, starttls="imap")
    proc = certman(
        "inspect",
        "--endpoint",
        "mail.customer.example",
        "--connect-to",
        f"127.0.0.1:{server.port}",
        "--starttls",
        "imap",
        "--trust-store",
        roots,
    )
    assert proc.returncode == 1
    assert f"imap://mail.customer.example:443 via 127.0.0.1:{server.port}" in proc.stdout
    assert "hostname-mismatch" in proc.stdout
    proc = certman("inspect", f"imap://localhost:{server.port}", "--trust-store", roots, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [obj] = json.loads(proc.stdout)
    assert obj["status"] == "ok" and obj["findings"] == []
    assert len(obj["certificates"]) == 2


def test_inspect_unreachable_endpoint(roots: str) -> None:
    port = refused_port()
    proc = certman("inspect", f"127.0.0.1:{port}", "--trust-store", roots)
    assert proc.returncode == 1
    assert "connection refused [endpoint-refused]" in proc.stdout


def test_fix_reorders_and_drops_the_root(pki: Pki, roots: str, tmp_path: Path) -> None:
    stray = make_cert("stray.example")
    broken = tmp_path / "broken.pem"
    broken.write_bytes(pki.root.pem + pki.intermediate.pem + stray.pem + pki.leaf.pem)
    out = tmp_path / "fixed.pem"
    proc = certman("inspect", str(broken), "--fix", "-o", str(out), "--trust-store", roots)
    assert proc.returncode == 0, proc.stderr
    assert "chain-order" in proc.stdout  # the report is about the original
    assert "wrote 2 certificates" in proc.stderr and "removed the root" in proc.stderr
    assert out.read_bytes() == pki.leaf.pem + pki.intermediate.pem
    assert (out.stat().st_mode & 0o777) == 0o644
    # The fixed file is clean.
    assert certman("inspect", str(out), "--trust-store", roots).returncode == 0


def test_fix_to_stdout(pki: Pki, roots: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_bytes(pki.intermediate.pem + pki.leaf.pem)
    proc = certman("inspect", str(broken), "--fix", "-o", "-", "--trust-store", roots)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == pki.leaf.pem + pki.intermediate.pem


def test_fix_needs_the_missing_intermediate(
    aia_server: AiaServer, roots: str, tmp_path: Path
) -> None:
    root = make_cert("Fix Root", ca=True)
    inter = make_cert("Fix Intermediate", issuer=root, ca=True)
    leaf = make_cert("localhost", issuer=inter, names=["localhost"], aia_url=aia_server.url("/i"))
    aia_server.routes["/i"] = ("application/pkix-cert", inter.der)
    (tmp_path / "root.pem").write_bytes(root.pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    out = tmp_path / "fixed.pem"
    args = ["inspect", "leaf.pem", "--fix", "-o", str(out), "--trust-store", "root.pem"]
    proc = certman(*args, cwd=tmp_path)
    assert proc.returncode == 1
    assert "add --fetch-intermediates" in proc.stderr
    assert not out.exists()
    assert aia_server.hits == {}  # no network without the flag

    proc = certman(*args, "--fetch-intermediates", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == leaf.pem + inter.pem
    [obj] = json.loads(proc.stdout)
    assert obj["fix"]["written"] is True
    assert any("added the missing intermediate" in c for c in obj["fix"]["changes"])
    assert "fetched over AIA" in obj["findings"][0]["message"]


def test_fix_a_live_endpoint(pki: Pki, serve: Serve, roots: str, tmp_path: Path) -> None:
    server = serve(chain=[pki.leaf.cert, pki.root.cert, pki.intermediate.cert], key=pki.leaf.key)
    out = tmp_path / "fixed.pem"
    proc = certman(
        "inspect", f"localhost:{server.port}", "--fix", "-o", str(out), "--trust-store", roots
    )
    assert proc.returncode == 0, proc.stderr
    certs = x509.load_pem_x509_certificates(out.read_bytes())
    assert certs == [pki.leaf.cert, pki.intermediate.cert]


def test_fix_usage(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(pki.leaf.pem)
    assert certman("inspect", "a.pem", "a.pem", "--fix", "-o", "x", cwd=tmp_path).returncode == 2
    assert certman("inspect", "a.pem", "--fix", cwd=tmp_path).returncode == 2
    assert certman("inspect", "a.pem", "-o", "x", cwd=tmp_path).returncode == 2


def test_recipe_customers_on_a_distrusted_ca(
    pki: Pki, serve: Serve, roots: str, tmp_path: Path
) -> None:
    # docs/endpoints.md: "which of our customers' sites are on a distrusted CA".
    other = make_cert("Fine CA", ca=True, org="Fine CA Inc")
    fine_leaf = make_cert("localhost", issuer=other, names=["localhost"])
    bad = serve(chain=[pki.leaf.cert, pki.intermediate.cert], key=pki.leaf.key)
    fine = serve(chain=[fine_leaf.cert], key=fine_leaf.key)
    hosts = tmp_path / "customers.txt"
    hosts.write_text(
        f"shop-a.example 127.0.0.1:{bad.port}\nshop-b.example 127.0.0.1:{fine.port}\n"
        f"shop-c.example 127.0.0.1:{refused_port()}\n"
    )
    proc = certman(
        "scan",
        "--endpoints-file",
        str(hosts),
        "--only",
        "distrusted-ca",
        "--distrust",
        "O=Certman Test",
        "--format",
        "jsonl",
        "--fail-on",
        "critical",
    )
    assert proc.returncode == 1
    got = jsonl(proc.stdout)
    a = got[f"shop-a.example:443 via 127.0.0.1:{bad.port}"]
    assert [f["rule"] for f in a["findings"]] == ["distrusted-ca"]
    assert got[f"shop-b.example:443 via 127.0.0.1:{fine.port}"]["findings"] == []
    unreachable = [o for o in got.values() if o["status"] == "error"]
    assert [o["error_code"] for o in unreachable] == ["endpoint-refused"]


def test_fix_into_a_missing_directory_is_a_clear_error(
    pki: Pki, roots: str, tmp_path: Path
) -> None:
    (tmp_path / "a.pem").write_bytes(pki.leaf.pem + pki.intermediate.pem)
    proc = certman(
        "inspect", "a.pem", "--fix", "-o", "no/such/dir/x.pem", "--trust-store", roots, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert "cannot write no/such/dir/x.pem" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_scan_files_with_fetch_intermediates(aia_server: AiaServer, tmp_path: Path) -> None:
    root = make_cert("Scan Root", ca=True)
    inter = make_cert("Scan Intermediate", issuer=root, ca=True)
    (tmp_path / "root.pem").write_bytes(root.pem)
    certs = tmp_path / "certs"
    certs.mkdir()
    for i in range(3):
        leaf = make_cert(
            f"site{i}.example",
            issuer=inter,
            names=[f"site{i}.example"],
            aia_url=aia_server.url("/i"),
        )
        (certs / f"site{i}.pem").write_bytes(leaf.pem)
    aia_server.routes["/i"] = ("application/pkix-cert", inter.der)
    base = ["scan", str(certs), "--trust-store", str(tmp_path / "root.pem"), "--json"]
    plain = [json.loads(line) for line in certman(*base).stdout.splitlines()]
    assert len(plain) == 3 and aia_server.hits == {}
    fetched = [
        json.loads(line) for line in certman(*base, "--fetch-intermediates").stdout.splitlines()
    ]
    assert len(fetched) == 3
    for obj in fetched:
        [finding] = obj["findings"]
        assert finding["rule"] == "missing-intermediate"
        assert "fetched over AIA: 'Scan Intermediate' (chain then trusted via" in finding["message"]
    assert aia_server.hits == {"/i": 1}  # one download for the whole scan
