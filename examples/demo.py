"""`make demo`: a certificate for two names from a local CA, with the real `certman` command.

1. starts a LocalPebble (Pebble + pebble-challtestsrv on free loopback ports,
   a fresh TLS certificate for its HTTPS API);
2. runs ``certman issue`` as a separate process, exactly as a user would:
   it registers an account (``--agree-tos``) and gets one certificate for
   two names, answering HTTP-01 with its built-in responder on the port
   Pebble validates against;
3. shows ``certman list`` and ``certman inspect`` of the live fullchain.

Everything lives in a temporary directory that is removed afterwards.
Target: under 5 s in total on a 2-core machine.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from certman.testing import LocalPebble

CERTMAN = [sys.executable, "-m", "certman"]


def run(args: list[str], *, check: bool = True) -> tuple[float, str]:
    shown = " ".join(shlex.quote(a) for a in ["certman", *args])
    print(f"\n$ {shown}", flush=True)
    started = time.monotonic()
    proc = subprocess.run([*CERTMAN, *args], capture_output=True, text=True)
    took = time.monotonic() - started
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if check and proc.returncode != 0:
        raise SystemExit(f"certman exited {proc.returncode}")
    print(f"  ({took:.2f} s)", flush=True)
    return took, proc.stdout


def main() -> int:
    t0 = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="certman-demo-"))
    try:
        with LocalPebble(validity_period=90 * 86400) as pebble:
            t_ca = time.monotonic() - t0
            print(f"Local Pebble CA at {pebble.directory_url} ({t_ca:.2f} s to start)")
            roots = home / "pebble-roots.pem"
            roots.write_text("".join(pebble.roots_pem()))
            common = [
                "--home",
                str(home),
                "--server",
                pebble.directory_url,
                "--ca-bundle",
                str(pebble.ca_bundle),
            ]
            t_issue, _ = run(
                [
                    *common,
                    "issue",
                    "-d",
                    "demo.example",
                    "-d",
                    "www.demo.example",
                    "--standalone",
                    "--listen",
                    f"127.0.0.1:{pebble.http_port}",
                    "--agree-tos",
                ]
            )
            t_list, _ = run(["--home", str(home), "list"])
            fullchain = home / "certs" / "demo.example" / "live" / "fullchain.pem"
            t_inspect, _ = run(
                [
                    "inspect",
                    str(fullchain),
                    "--host",
                    "www.demo.example",
                    "--trust-store",
                    str(roots),
                ],
                check=False,
            )
        total = time.monotonic() - t0
        print(
            f"\nTimings: CA start {t_ca:.2f} s, issue (register + order, one process) "
            f"{t_issue:.2f} s, list {t_list:.2f} s, inspect {t_inspect:.2f} s; "
            f"total {total:.2f} s"
        )
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
