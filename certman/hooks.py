"""Running the user's hook commands around renewals.

Three kinds of hook, as in certbot, so existing scripts carry over:

- **pre** hooks run once, before the first certificate is actually renewed
  in a run (not at all when nothing is due), e.g. to open a firewall port;
- **deploy** hooks run after each successfully renewed certificate, with the
  certificate's name and paths in the environment (see
  :func:`deploy_environment`), e.g. to reload nginx;
- **post** hooks run once at the end of a run, only if something was renewed.

Commands run through ``/bin/sh -c`` (so they may use pipes and ``&&``) in a
new session, with a timeout after which the whole process group is
terminated, then killed. Their output goes to temporary files rather than
pipes: a hook that starts a daemon (``service nginx restart``) leaves that
daemon holding the hook's stdout, and waiting for a pipe's end would then
hang forever.

A failing hook never raises: :func:`run_hook` returns a :class:`HookResult`
that says what happened, so the caller reports it and carries on with the
other certificates. Call :meth:`HookResult.check` to turn a failure into a
:class:`~certman.errors.RenewalError` when that is wanted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from certman.errors import RenewalError

logger = logging.getLogger(__name__)

HookKind = Literal["pre", "deploy", "post"]

DEFAULT_TIMEOUT = 300.0
"""Seconds a hook may run before it is terminated."""

KILL_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL for a hook that ran out of time."""

OUTPUT_LIMIT = 4096
"""Characters of each of stdout/stderr kept in a :class:`HookResult` (the tail)."""


@dataclass(frozen=True)
class HookResult:
    """What one hook command did.

    ``returncode`` is None when the command never finished (timed out) or
    could not be started (``error`` says why). ``stdout``/``stderr`` hold the
    last :data:`OUTPUT_LIMIT` characters of each.
    """

    kind: HookKind
    command: str
    returncode: int | None
    duration: float
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    error: str | None = None
    certificate: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    @property
    def summary(self) -> str:
        """One line for a report: what ran and how it ended."""
        subject = f"{self.kind} hook {self.command!r}"
        if self.certificate:
            subject += f" for {self.certificate}"
        if self.ok:
            return f"{subject} succeeded"
        if self.timed_out:
            return f"{subject} timed out after {self.duration:.0f}s and was killed"
        if self.error is not None:
            return f"{subject} could not run: {self.error}"
        last = _last_line(self.stderr) or _last_line(self.stdout)
        status = (
            f"was killed by signal {-self.returncode}"
            if self.returncode is not None and self.returncode < 0
            else f"failed with exit status {self.returncode}"
        )
        return f"{subject} {status}" + (f": {last}" if last else "")

    def check(self) -> HookResult:
        """Return self when the hook succeeded, else raise ``RenewalError``.

        Codes: ``hook-timeout``, ``hook-failed``.
        """
        if self.ok:
            return self
        raise RenewalError(
            self.summary,
            code="hook-timeout" if self.timed_out else "hook-failed",
            hook=self.kind,
            command=self.command,
            returncode=self.returncode,
            certificate=self.certificate,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, for ``--json`` reports."""
        return {
            "kind": self.kind,
            "command": self.command,
            "certificate": self.certificate,
            "ok": self.ok,
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "duration": round(self.duration, 3),
            "error": self.error,
            "summary": self.summary,
            "stderr": self.stderr,
        }


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def deploy_environment(name: str, live_dir: str | Path, domains: Iterable[str]) -> dict[str, str]:
    """The environment a deploy hook sees for one renewed certificate.

    ``CERTMAN_NAME`` (the certificate's name), ``CERTMAN_LIVE_DIR`` (its
    ``live`` directory), ``CERTMAN_FULLCHAIN``, ``CERTMAN_CHAIN``,
    ``CERTMAN_CERT``, ``CERTMAN_PRIVKEY`` (files in it) and
    ``CERTMAN_DOMAINS`` (the names on the certificate, space separated).
    certbot's ``RENEWED_LINEAGE`` and ``RENEWED_DOMAINS`` are set too, so
    deploy hooks written for certbot work unchanged.
    """
    live = str(live_dir)
    names = " ".join(domains)
    return {
        "CERTMAN_NAME": name,
        "CERTMAN_LIVE_DIR": live,
        "CERTMAN_FULLCHAIN": os.path.join(live, "fullchain.pem"),
        "CERTMAN_CHAIN": os.path.join(live, "chain.pem"),
        "CERTMAN_CERT": os.path.join(live, "cert.pem"),
        "CERTMAN_PRIVKEY": os.path.join(live, "privkey.pem"),
        "CERTMAN_DOMAINS": names,
        "RENEWED_LINEAGE": live,
        "RENEWED_DOMAINS": names,
    }


def _read_tail(handle: IO[bytes]) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    # Read a little more than needed in bytes so multi-byte characters at the cut survive.
    handle.seek(max(0, size - OUTPUT_LIMIT * 4))
    return handle.read().decode("utf-8", errors="replace")[-OUTPUT_LIMIT:]


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def run_hook(
    command: str,
    *,
    kind: HookKind = "deploy",
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    cwd: str | Path | None = None,
    certificate: str | None = None,
) -> HookResult:
    """Run one hook command through the shell and report how it went.

    ``env`` is added to certman's own environment. The command's stdin is
    ``/dev/null``. After ``timeout`` seconds its whole process group gets
    SIGTERM, then SIGKILL :data:`KILL_GRACE` seconds later. Never raises for
    a failing command; see :class:`HookResult`.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    logger.info("running %s hook: %s", kind, command)
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return HookResult(
                kind,
                command,
                None,
                time.monotonic() - started,
                error=str(exc),
                certificate=certificate,
            )
        timed_out = False
        try:
            returncode: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait()
            returncode = None
        # The shell is gone; make sure nothing it started in its group lingers either.
        if timed_out:
            _kill_group(process, signal.SIGKILL)
        result = HookResult(
            kind,
            command,
            returncode,
            time.monotonic() - started,
            stdout=_read_tail(out),
            stderr=_read_tail(err),
            timed_out=timed_out,
            certificate=certificate,
        )
    if result.ok:
        logger.info("%s", result.summary)
    else:
        logger.warning("%s", result.summary)
    return result


Runner = Callable[..., HookResult]


@dataclass
class HookSession:
    """Runs the hooks of one renewal run with certbot's once-only rules. Thread safe.

    ``pre``, ``deploy`` and ``post`` are the commands given for the whole run
    (``certman renew --pre-hook ...``); hooks stored with a certificate at
    issue time are passed per certificate to :meth:`before_renewal`,
    :meth:`renewed` and collected for :meth:`finish`. Each distinct pre or
    post command runs at most once per session, whichever certificates ask
    for it. Deploy hooks run one at a time (``serialize_deploy``) so that a
    fleet of renewals does not reload the web server in parallel.

    Every result is also appended to :attr:`results` for the run's report.
    """

    pre: Sequence[str] = ()
    deploy: Sequence[str] = ()
    post: Sequence[str] = ()
    timeout: float = DEFAULT_TIMEOUT
    serialize_deploy: bool = True
    runner: Runner = run_hook
    results: list[HookResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _deploy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pre_done: set[str] = field(default_factory=set, repr=False)
    _post_wanted: list[str] = field(default_factory=list, repr=False)
    _renewed: int = 0
    _finished: bool = False

    def _record(self, result: HookResult) -> HookResult:
        with self._lock:
            self.results.append(result)
        return result

    def before_renewal(self, extra: Sequence[str] = ()) -> list[HookResult]:
        """Run pre hooks (the session's, then ``extra``) not yet run in this session.

        Call it just before ordering a certificate. Holds a lock while the
        hooks run, so concurrent callers wait until the pre hooks are done.
        """
        results = []
        with self._lock:
            todo = [c for c in _unique([*self.pre, *extra]) if c not in self._pre_done]
            self._pre_done.update(todo)
            for command in todo:
                result = self.runner(command, kind="pre", timeout=self.timeout)
                self.results.append(result)
                results.append(result)
        return results

    def renewed(
        self,
        name: str,
        live_dir: str | Path,
        domains: Iterable[str],
        *,
        deploy: Sequence[str] = (),
        post: Sequence[str] = (),
    ) -> list[HookResult]:
        """Note that ``name`` was renewed and run its deploy hooks.

        ``deploy`` / ``post`` are the certificate's own stored hooks, run
        after the session's deploy hooks / remembered for :meth:`finish`.
        """
        env = deploy_environment(name, live_dir, domains)
        with self._lock:
            self._renewed += 1
            self._post_wanted.extend(post)
        results = []
        for command in _unique([*self.deploy, *deploy]):
            if self.serialize_deploy:
                with self._deploy_lock:
                    result = self.runner(
                        command, kind="deploy", env=env, timeout=self.timeout, certificate=name
                    )
            else:
                result = self.runner(
                    command, kind="deploy", env=env, timeout=self.timeout, certificate=name
                )
            results.append(self._record(result))
        return results

    @property
    def renewed_count(self) -> int:
        with self._lock:
            return self._renewed

    def finish(self) -> list[HookResult]:
        """Run each distinct post hook once, if anything was renewed. Idempotent."""
        with self._lock:
            if self._finished or self._renewed == 0:
                self._finished = True
                return []
            self._finished = True
            todo = _unique([*self.post, *self._post_wanted])
        return [
            self._record(self.runner(command, kind="post", timeout=self.timeout))
            for command in todo
        ]

    @property
    def failures(self) -> list[HookResult]:
        with self._lock:
            return [r for r in self.results if not r.ok]


def _unique(commands: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for command in commands:
        if command and command.strip():
            seen.setdefault(command, None)
    return list(seen)


__all__ = [
    "DEFAULT_TIMEOUT",
    "HookKind",
    "HookResult",
    "HookSession",
    "deploy_environment",
    "run_hook",
]
