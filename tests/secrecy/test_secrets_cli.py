"""Secrets: modes of everything that holds a key, and no key material in any output.

Runs the real ``certman`` command against a real Pebble, with the most
verbose logging (``-vv``, debug) and a permissive umask (000), then:

- walks the store: every directory is 0700, every file holding a private key
  (account key, previous account key, ``privkey.pem``) is 0600, and no file
  that is group/world readable contains a private key;
- greps everything the commands printed (stdout and stderr, debug logs
  included; ``revoke`` with the account key and with the certificate's own
  key too), every ``meta.json``, every ``--json`` output and a deploy hook's
  whole environment for: PEM private
  key markers, each private key's base64 body (whole, and every 64-character
  line of it), and the JWK private members of the account key (``"d"``, and
  ``"p"``/``"q"``/``"dp"``/``"dq"``/``"qi"`` for RSA) both as members and as
  values.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certman.testing import LocalPebble
from tests.conftest import running_pebble

pytestmark = pytest.mark.pebble


@pytest.fixture(scope="module")
def pebble() -> Iterator[LocalPebble]:
    yield from running_pebble()


class Runner:
    def __init__(self, home: Path, ca: LocalPebble) -> None:
        self.home, self.ca = home, ca
        self.outputs: list[tuple[str, str]] = []

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTMAN_")}
        cmd = [
            sys.executable,
            "-c",
            "import os; os.umask(0); from certman.cli import main; main(prog_name='certman')",
            "-vv",
            "--home",
            str(self.home),
            "--server",
            self.ca.directory_url,
            "--ca-bundle",
            str(self.ca.ca_bundle),
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        self.outputs.append((" ".join(args), proc.stdout + proc.stderr))
        if ok:
            assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
        return proc


def _b64url(n: int, length: int | None = None) -> str:
    raw = n.to_bytes(length or (n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def secrets_of(pem: bytes) -> list[str]:
    """Strings that would betray this private key if they appeared anywhere."""
    body = b"".join(
        line for line in pem.splitlines() if line and not line.startswith(b"-----")
    ).decode()
    out = [body] + [
        body[i : i + 64] for i in range(0, len(body), 64) if len(body[i : i + 64]) >= 40
    ]
    key = serialization.load_pem_private_key(pem, None)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.append(base64.b64encode(der).decode()[:60])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        d = key.private_numbers().private_value
        out += [_b64url(d, size), format(d, "x")]
    elif isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        for v in (nums.d, nums.p, nums.q, nums.dmp1, nums.dmq1, nums.iqmp):
            out += [_b64url(v), format(v, "x")[:60]]
    return out


def private_key_files(home: Path) -> list[Path]:
    return [
        p
        for p in home.rglob("*.pem")
        if p.is_file() and not p.is_symlink() and b"PRIVATE KEY" in p.read_bytes()
    ]


def assert_no_key_material(text: str, keys: list[bytes], where: str) -> None:
    assert "PRIVATE KEY" not in text, f"{where}: a PEM private key marker"
    for pem in keys:
        for secret in secrets_of(pem):
            assert secret not in text, f"{where}: private key material ({secret[:12]}...)"
    for member in ('"d":', '"p":', '"q":', '"dp":', '"dq":', '"qi":'):
        assert member not in text.replace(" ", ""), f"{where}: JWK private member {member}"


def test_modes_and_no_key_material_anywhere(pebble: LocalPebble, tmp_path: Path) -> None:
    home = tmp_path / "home"
    certman = Runner(home, pebble)
    listen = ["--standalone", "--listen", f"127.0.0.1:{pebble.http_port}"]
    certman("account", "register", "--agree-tos", "--email", "ops@example.org")
    # A deploy hook that records its environment: hooks get paths, never keys.
    env_dump = tmp_path / "hook-env"
    hook = f"env >> {env_dump}; echo '--' >> {env_dump}"
    certman(
        "issue", "-d", "secret.example", "-d", "www.secret.example", "--deploy-hook", hook, *listen
    )
    certman("issue", "-d", "rsa.example", "--key-type", "rsa-2048", "--json", *listen)
    certman("renew", "--force")
    certman("renew", "--force", "--json")
    certman("account", "show")
    certman("account", "show", "--json")
    certman("account", "update", "--email", "sec@example.org")
    certman("account", "rollover")
    certman("account", "show", "--json")
    certman("list")
    certman("list", "--json")
    certman("revoke", "rsa.example", "--reason", "superseded")
    certman("revoke", "secret.example", "--use-cert-key", "--json")

    # -- modes (the commands ran with umask 000) --
    for path in [home, *home.rglob("*")]:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o700, f"{path} is {oct(st.st_mode)}"
    key_files = private_key_files(home)
    names = {p.name for p in key_files}
    assert "privkey.pem" in names and "key.pem" in names, names
    assert "key.prev.pem" in names  # the rollover kept the old key, also private
    for path in key_files:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode == 0o600, f"{path} holds a private key and is {oct(mode)}"
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if mode & 0o077:
                assert b"PRIVATE KEY" not in path.read_bytes(), path

    # -- no key material in any output, meta.json or JSON --
    keys = [p.read_bytes() for p in key_files]
    for args, text in certman.outputs:
        assert_no_key_material(text, keys, f"output of certman -vv {args}")
    debug_lines = sum(text.count("DEBUG") for _, text in certman.outputs)
    assert debug_lines > 0, "-vv should have produced debug logging (else this test proves little)"
    for meta in home.rglob("meta.json"):
        assert_no_key_material(meta.read_text(), keys, str(meta))
    hook_env = env_dump.read_text()
    assert hook_env.count("CERTMAN_PRIVKEY=") >= 2, "the deploy hook ran at issue and renew"
    assert_no_key_material(hook_env, keys, "the deploy hook's environment")
    for account in home.rglob("account.json"):
        assert_no_key_material(account.read_text(), keys, str(account))
    # account show prints the account, never its key.
    shown = json.loads(certman("account", "show", "--json").stdout)
    assert isinstance(shown, dict)
    assert not {"key", "private_key", "jwk", "key_pem"} & set(shown), shown
    # The checks can fail: each key's own file trips them.
    for pem in keys:
        with pytest.raises(AssertionError):
            assert_no_key_material(pem.decode(), keys, "self-check")
        jwk_like = json.dumps({"kty": "EC", "d": secrets_of(pem)[-2]})
        with pytest.raises(AssertionError):
            assert_no_key_material(jwk_like, [], "self-check")
