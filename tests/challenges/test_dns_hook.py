"""DnsHookSolver with real hook processes: a recording shell script, failures, timeouts,
and a hook that drives pebble-challtestsrv's DNS server (checked with a real DNS query)."""

from __future__ import annotations

import socket
import stat
import struct
import sys
import time
from pathlib import Path

import pytest

from certman.challenges import ChallengeTask, DnsHookSolver
from certman.errors import ChallengeError
from tests.conftest import require_tool

VALUE_A = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo"
VALUE_B = "aMORMtHITB6hkoZuTjRWLkbTMrgwVmgE-pRN4mJ8Rw0"


def task(identifier: str, value: str) -> ChallengeTask:
    return ChallengeTask(identifier, "dns", "dns-01", "tok", value)


def write_hook(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


RECORDER = """#!/bin/sh
printf '%s|%s|%s|%s|%s|%s|%s|%s|%s\\n' "$#" "$1" "$2" "$3" "$CERTMAN_DNS_ACTION" \\
  "$CERTMAN_DNS_NAME" "$CERTMAN_DNS_DOMAIN" "$CERTMAN_DNS_RECORD" "$CERTMAN_DNS_VALUE" \\
  >> "$HOOK_LOG"
echo "some chatter on stdout"
"""


def test_hook_contract_argv_and_environment(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    hook = write_hook(tmp_path / "hook.sh", RECORDER)
    waits: list[float] = []
    solver = DnsHookSolver(
        str(hook), env={"HOOK_LOG": str(log)}, propagation_wait=7.5, sleep=waits.append
    )
    assert solver.challenge_types == ("dns-01",)
    tasks = [task("example.org", VALUE_A), task("*.example.org", VALUE_B)]
    solver.present(tasks)
    assert waits == [7.5]  # once per present, after every record is set
    solver.cleanup(tasks)
    rec = "_acme-challenge.example.org."
    assert log.read_text().splitlines() == [
        f"3|set|{rec}|{VALUE_A}|set|example.org|example.org|{rec}|{VALUE_A}",
        f"3|set|{rec}|{VALUE_B}|set|*.example.org|example.org|{rec}|{VALUE_B}",
        f"3|clear|{rec}|{VALUE_A}|clear|example.org|example.org|{rec}|{VALUE_A}",
        f"3|clear|{rec}|{VALUE_B}|clear|*.example.org|example.org|{rec}|{VALUE_B}",
    ]


def test_command_with_arguments_is_split_without_a_shell(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    hook = write_hook(tmp_path / "hook.sh", RECORDER)
    solver = DnsHookSolver(f"/bin/sh {hook}", env={"HOOK_LOG": str(log)})
    solver.present([task("a.example", VALUE_A)])
    assert log.read_text().startswith("3|set|_acme-challenge.a.example.|")
    solver = DnsHookSolver(["/bin/sh", str(hook)], env={"HOOK_LOG": str(log)})
    solver.cleanup([task("a.example", VALUE_A)])
    assert log.read_text().splitlines()[-1].startswith("3|clear|")


def test_failing_hook_reports_stderr_tail_and_clears_what_it_set(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    hook = write_hook(
        tmp_path / "hook.sh",
        f"""#!/bin/sh
echo "$1 $2 $3" >> {log}
if [ "$1" = set ] && [ "$3" = "{VALUE_B}" ]; then
  echo "lots of noise" >&2
  echo "API error: zone example.net not found" >&2
  exit 3
fi
""",
    )
    solver = DnsHookSolver(str(hook))
    with pytest.raises(ChallengeError) as err:
        solver.present([task("example.org", VALUE_A), task("example.net", VALUE_B)])
    assert err.value.code == "challenge-hook-failed"
    assert "exit status 3" in str(err.value)
    assert "zone example.net not found" in str(err.value)
    assert err.value.details["exit_status"] == 3
    assert "\n" not in str(err.value)  # one line for the CLI
    calls = log.read_text().splitlines()
    assert calls == [
        f"set _acme-challenge.example.org. {VALUE_A}",
        f"set _acme-challenge.example.net. {VALUE_B}",
        f"clear _acme-challenge.example.org. {VALUE_A}",  # rolled back
    ]


def test_cleanup_failure_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = write_hook(tmp_path / "hook.sh", "#!/bin/sh\necho nope >&2\nexit 1\n")
    DnsHookSolver(str(hook)).cleanup([task("example.org", VALUE_A)])
    assert "clearing _acme-challenge.example.org. failed" in caplog.text


def test_hook_timeout_kills_the_whole_hook(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hook = write_hook(tmp_path / "hook.sh", f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    solver = DnsHookSolver(str(hook), timeout=0.5)
    with pytest.raises(ChallengeError) as err:
        solver.run("set", task("example.org", VALUE_A))
    assert err.value.code == "challenge-hook-timeout"
    child = int(pidfile.read_text())
    # The grandchild got SIGKILL too: it disappears (or becomes a zombie
    # awaiting its reaper) as soon as the kernel has delivered the signal.
    state = "alive"
    for _ in range(500):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("gone", "Z", "X"):
            break
        time.sleep(0.01)
    assert state in ("gone", "Z", "X")


def test_missing_or_empty_hook(tmp_path: Path) -> None:
    with pytest.raises(ChallengeError) as err:
        DnsHookSolver(str(tmp_path / "nope")).present([task("example.org", VALUE_A)])
    assert err.value.code == "challenge-hook-not-found"
    with pytest.raises(ChallengeError) as err:
        DnsHookSolver("   ")
    assert err.value.code == "challenge-hook-missing"
    with pytest.raises(ChallengeError) as err:
        DnsHookSolver("true").present([ChallengeTask("example.org", "dns", "http-01", "t", "v")])
    assert err.value.code == "challenge-unsupported-type"


# -- through pebble-challtestsrv ------------------------------------------------------


def query_txt(port: int, name: str) -> list[str]:
    """A minimal DNS TXT query over UDP (enough to read challtestsrv's answers)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 16, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(packet, ("127.0.0.1", port))
        data = s.recv(4096)
    answers = struct.unpack(">H", data[6:8])[0]
    pos = 12 + len(qname) + 4
    out = []
    for _ in range(answers):
        if data[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        rtype, _, _, rdlength = struct.unpack(">HHIH", data[pos : pos + 10])
        pos += 10
        rdata = data[pos : pos + rdlength]
        pos += rdlength
        if rtype == 16:
            i = 0
            while i < len(rdata):
                out.append(rdata[i + 1 : i + 1 + rdata[i]].decode())
                i += 1 + rdata[i]
    return sorted(out)


PEBBLE_HOOK = """#!{python}
# The documented contract, implemented against pebble-challtestsrv's management API.
import json, os, sys, urllib.request
action, record, value = sys.argv[1:4]
assert os.environ["CERTMAN_DNS_RECORD"] == record and os.environ["CERTMAN_DNS_VALUE"] == value
body = {{"host": record, "value": value}} if action == "set" else {{"host": record}}
req = urllib.request.Request(
    os.environ["CHALLTESTSRV"] + ("/set-txt" if action == "set" else "/clear-txt"),
    data=json.dumps(body).encode(), method="POST")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
opener.open(req, timeout=10).read()
"""


@pytest.mark.pebble
def test_hook_driving_pebble_challtestsrv(tmp_path: Path) -> None:
    require_tool("pebble", package="pebble")
    require_tool("pebble-challtestsrv", package="pebble")
    from certman.testing import LocalPebble

    hook = write_hook(tmp_path / "challtestsrv-hook", PEBBLE_HOOK.format(python=sys.executable))
    with LocalPebble() as pebble:
        solver = DnsHookSolver(str(hook), env={"CHALLTESTSRV": pebble.challtestsrv_url})
        record = "_acme-challenge.wild.example."
        assert query_txt(pebble.dns_port, record) == []
        tasks = [task("wild.example", VALUE_A), task("*.wild.example", VALUE_B)]
        solver.present(tasks)
        assert query_txt(pebble.dns_port, record) == sorted([VALUE_A, VALUE_B])
        solver.cleanup(tasks)
        assert query_txt(pebble.dns_port, record) == []
