"""certman.hooks: real shell commands and scripts, their environment, failures, timeouts."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from certman import RenewalError
from certman.hooks import HookResult, HookSession, deploy_environment, run_hook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_deploy_hook_sees_the_certificate_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    dumper = tmp_path / "dump_env.py"
    dumper.write_text(
        "import json, os, sys\n"
        "wanted = {k: v for k, v in os.environ.items() if k.startswith(('CERTMAN_', 'RENEWED_'))}\n"
        "json.dump(wanted, open(sys.argv[1], 'w'))\n"
    )
    dump = f"{shlex.quote(sys.executable)} {shlex.quote(str(dumper))} {shlex.quote(str(out))}"
    script = write_script(tmp_path / "deploy.sh", dump + "\n")
    live = tmp_path / "certs" / "example" / "live"
    env = deploy_environment("example", live, ["example.org", "www.example.org"])
    result = run_hook(str(script), env=env, certificate="example")
    assert result.ok, result.summary
    seen = json.loads(out.read_text())
    assert seen == {
        "CERTMAN_NAME": "example",
        "CERTMAN_LIVE_DIR": str(live),
        "CERTMAN_FULLCHAIN": str(live / "fullchain.pem"),
        "CERTMAN_CHAIN": str(live / "chain.pem"),
        "CERTMAN_CERT": str(live / "cert.pem"),
        "CERTMAN_PRIVKEY": str(live / "privkey.pem"),
        "CERTMAN_DOMAINS": "example.org www.example.org",
        "RENEWED_LINEAGE": str(live),
        "RENEWED_DOMAINS": "example.org www.example.org",
    }
    assert "succeeded" in result.summary


def test_shell_syntax_and_output_are_captured(tmp_path: Path) -> None:
    result = run_hook("echo hello && echo piped | tr a-z A-Z; echo warn >&2", kind="post")
    assert result.ok
    assert result.stdout == "hello\nPIPED\n"
    assert result.stderr == "warn\n"


def test_failure_is_reported_not_raised(tmp_path: Path) -> None:
    result = run_hook("echo starting; echo 'nginx: config test failed' >&2; exit 3", kind="deploy",
                      certificate="site")  # fmt: skip
    assert not result.ok and result.returncode == 3 and not result.timed_out
    assert result.summary == (
        "deploy hook \"echo starting; echo 'nginx: config test failed' >&2; exit 3\" for site "
        "failed with exit status 3: nginx: config test failed"
    )
    with pytest.raises(RenewalError) as info:
        result.check()
    assert info.value.code == "hook-failed"
    assert info.value.details["returncode"] == 3
    data = result.to_dict()
    assert data["ok"] is False and json.dumps(data)


def test_missing_command_is_a_failure() -> None:
    result = run_hook("/nonexistent/certman-hook-xyz")
    assert not result.ok and result.returncode == 127


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The shell starts a grandchild that would hold stdout open and outlive the shell.
    command = f"sleep 60 & echo $! > {shlex.quote(str(pid_file))}; wait"
    result = run_hook(command, timeout=0.5, kind="pre")
    assert result.timed_out and result.returncode is None and not result.ok
    assert "timed out" in result.summary
    with pytest.raises(RenewalError) as info:
        result.check()
    assert info.value.code == "hook-timeout"
    child = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.02)
    assert not _alive(child)


def test_term_ignoring_hook_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import certman.hooks

    monkeypatch.setattr(certman.hooks, "KILL_GRACE", 0.3)
    result = run_hook("trap '' TERM; sleep 30", timeout=0.3)
    assert result.timed_out


def test_daemon_holding_stdout_does_not_block(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    # Like `service nginx restart`: leaves a process behind that keeps our stdout open.
    command = f"setsid sleep 30 & echo $! > {shlex.quote(str(pid_file))}; echo started"
    result = run_hook(command, timeout=10)
    try:
        # Had certman waited for the daemon to close stdout, the hook would have timed out.
        assert result.ok and not result.timed_out and result.stdout == "started\n"
    finally:
        os.kill(int(pid_file.read_text()), 15)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- HookSession -------------------------------------------------------------------


def test_session_runs_pre_once_deploy_each_post_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    q = shlex.quote(str(log))
    session = HookSession(
        pre=[f"echo pre >> {q}"],
        deploy=[f'echo "deploy $CERTMAN_NAME" >> {q}'],
        post=[f"echo post >> {q}"],
    )
    for name in ("a", "b", "c"):
        session.before_renewal(extra=[f"echo pre >> {q}", f"echo stored-pre >> {q}"])
        session.renewed(name, tmp_path / name, [f"{name}.example"], post=[f"echo post >> {q}"])
    session.finish()
    session.finish()
    assert log.read_text().splitlines() == [
        "pre", "stored-pre", "deploy a", "deploy b", "deploy c", "post",
    ]  # fmt: skip
    assert session.failures == [] and len(session.results) == 6
    assert session.renewed_count == 3


def test_session_without_renewals_runs_no_post_hook(tmp_path: Path) -> None:
    log = tmp_path / "log"
    session = HookSession(post=[f"echo post >> {shlex.quote(str(log))}"])
    assert session.finish() == []
    assert not log.exists()


def test_failing_hook_does_not_stop_the_others(tmp_path: Path) -> None:
    log = tmp_path / "log"
    q = shlex.quote(str(log))
    session = HookSession(deploy=['test "$CERTMAN_NAME" != bad', f'echo "$CERTMAN_NAME" >> {q}'])
    for name in ("good1", "bad", "good2"):
        session.renewed(name, tmp_path, [name])
    assert log.read_text().split() == ["good1", "bad", "good2"]
    (failure,) = session.failures
    assert failure.certificate == "bad" and failure.returncode == 1


def test_session_is_thread_safe_and_serializes_deploys(tmp_path: Path) -> None:
    active = 0
    peak = 0
    guard = threading.Lock()
    pre_calls: list[str] = []

    def runner(command: str, *, kind: str, **kwargs: object) -> HookResult:
        nonlocal active, peak
        if kind == "pre":
            pre_calls.append(command)
            time.sleep(0.05)  # the others must wait for the pre hook to finish
        with guard:
            active += 1
            peak = max(peak, active)
        time.sleep(0.002)
        with guard:
            active -= 1
        return HookResult(kind, command, 0, 0.0)  # type: ignore[arg-type]

    session = HookSession(pre=["p"], deploy=["d"], post=["q"], runner=runner)
    order: list[str] = []

    def work(i: int) -> None:
        session.before_renewal()
        order.append("renew")
        session.renewed(f"c{i}", tmp_path, [])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.finish()
    assert pre_calls == ["p"]
    assert peak == 1
    assert [r.kind for r in session.results].count("deploy") == 16
    assert session.results[0].kind == "pre" and session.results[-1].kind == "post"


# -- the shipped example hook ---------------------------------------------------------


def test_nginx_example_hook_reloads_through_the_given_commands(tmp_path: Path) -> None:
    hook = EXAMPLES / "hooks" / "nginx-reload.sh"
    calls = tmp_path / "calls"
    fake_nginx = write_script(tmp_path / "nginx", f'echo "nginx $*" >> {shlex.quote(str(calls))}\n')
    live = tmp_path / "live"
    live.mkdir()
    (live / "fullchain.pem").write_text("x")
    (live / "privkey.pem").write_text("y")
    env = deploy_environment("site", live, ["site.example"])
    env["NGINX"] = str(fake_nginx)
    env["RELOAD_COMMAND"] = f"{fake_nginx} -s reload"
    result = run_hook(f"sh {shlex.quote(str(hook))}", env=env, timeout=30)
    assert result.ok, result.summary + result.stderr
    assert calls.read_text().splitlines() == ["nginx -t -q", "nginx -s reload"]

    # A failing config test means no reload, and a failing hook.
    write_script(fake_nginx, f'echo "nginx $*" >> {shlex.quote(str(calls))}; exit 1\n')
    calls.unlink()
    result = run_hook(f"sh {shlex.quote(str(hook))}", env=env, timeout=30)
    assert not result.ok
    assert calls.read_text().splitlines() == ["nginx -t -q"]
