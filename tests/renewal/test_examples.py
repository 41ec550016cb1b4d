"""The shipped systemd units, cron line and hook are what docs/operations.md promises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def directives(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (comments skipped); repeated keys accumulate."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_service_is_a_hardened_oneshot() -> None:
    unit = directives(EXAMPLES / "systemd" / "certman-renew.service")
    expected = {
        "Type": "oneshot",
        "DynamicUser": "yes",
        "StateDirectory": "certman",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    (exec_start,) = unit["ExecStart"]
    assert exec_start.endswith("certman renew")


def test_timer_runs_twice_a_day_randomized_and_persistent() -> None:
    timer = directives(EXAMPLES / "systemd" / "certman-renew.timer")
    assert timer["OnCalendar"] == ["*-*-* 00,12:00:00"]
    assert timer["RandomizedDelaySec"] == ["12h"]
    assert timer["Persistent"] == ["true"]
    assert timer["WantedBy"] == ["timers.target"]


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (optional check)")
    true = shutil.which("true")
    assert true
    for unit in (EXAMPLES / "systemd").iterdir():
        text = unit.read_text()
        # verify insists that commands exist; point them at true(1).
        for binary in ("/usr/local/bin/certman", "/usr/sbin/nginx", "/bin/systemctl"):
            text = text.replace(binary, true)
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_cron_line_is_well_formed() -> None:
    lines = [
        line
        for line in (EXAMPLES / "cron" / "certman").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    (line,) = lines
    fields = line.split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    assert (minute, hour, dom, month, dow, user) == ("17", "3,15", "*", "*", "*", "root")
    assert "%" not in command  # cron would turn it into a newline
    assert "certman renew" in command
    subprocess.run(["sh", "-n", "-c", command], check=True)


def test_nginx_hook_is_valid_sh() -> None:
    hook = EXAMPLES / "hooks" / "nginx-reload.sh"
    subprocess.run(["sh", "-n", str(hook)], check=True)
    assert hook.stat().st_mode & 0o111
