"""DNS-01 through a command you provide: certman computes, your hook publishes.

certman knows nothing about DNS providers. For each DNS-01 challenge it runs
your hook once to add a TXT record and once, after validation, to remove it.

The hook contract (also in ``docs/challenges.md``)::

    CMD set   <record-name> <txt-value>     add this TXT value
    CMD clear <record-name> <txt-value>     remove this TXT value

``<record-name>`` is the fully qualified ``_acme-challenge.<domain>.`` (with
the trailing dot; the ``*.`` of a wildcard is already stripped) and
``<txt-value>`` the exact TXT string (base64url, 43 characters). The same
values are in the environment, added to certman's own:

- ``CERTMAN_DNS_ACTION``: ``set`` or ``clear``
- ``CERTMAN_DNS_NAME``: the identifier as ordered (``*.example.org`` for a wildcard)
- ``CERTMAN_DNS_DOMAIN``: the domain the record is for (``example.org``)
- ``CERTMAN_DNS_RECORD``: ``_acme-challenge.example.org.``
- ``CERTMAN_DNS_VALUE``: the TXT value

A name and its wildcard (``example.org`` and ``*.example.org``) share one
record name with two different values, so ``set`` must *add* a value, not
replace the record's values, and ``clear`` must remove only the given value.
Exit status 0 means done; anything else fails the challenge with the last
lines of the hook's stderr in the error. stdin is ``/dev/null``; stdout is
logged at DEBUG. The command is split with shell rules (``shlex``) but not
run through a shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from certman.challenges.base import ChallengeTask
from certman.errors import ChallengeError

log = logging.getLogger(__name__)

_STDERR_TAIL = 600


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    if len(text) > _STDERR_TAIL:
        text = "..." + text[-_STDERR_TAIL:]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


class DnsHookSolver:
    """Answers DNS-01 by running a user hook to set and clear TXT records.

    ``command``: a string (split with ``shlex``) or an argv list; certman
    appends ``set|clear <record-name> <txt-value>``. ``timeout``: seconds per
    hook run (then ``ChallengeError`` code ``"challenge-hook-timeout"``).
    ``propagation_wait``: seconds to wait after all records of one
    :meth:`present` are set, for providers whose authoritative servers lag.
    ``env``: extra environment for the hook. ``sleep`` is injectable for tests.

    Thread safe (each call runs its own process); concurrent orders may run
    the hook concurrently, so it must tolerate that.
    """

    challenge_types: tuple[str, ...] = ("dns-01",)

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        timeout: float = 120.0,
        propagation_wait: float = 0.0,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ChallengeError("the DNS hook command is empty", code="challenge-hook-missing")
        self.argv = argv
        self.timeout = timeout
        self.propagation_wait = propagation_wait
        self.env = dict(env or {})
        self._sleep = sleep

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            if task.challenge_type != "dns-01":
                raise ChallengeError(
                    f"the DNS hook answers dns-01 only, not {task.challenge_type} "
                    f"(for {task.identifier})",
                    code="challenge-unsupported-type",
                    identifier=task.identifier,
                )
        done: list[ChallengeTask] = []
        try:
            for task in tasks:
                self.run("set", task)
                done.append(task)
        except ChallengeError:
            self.cleanup(done)  # leave no stray records behind
            raise
        if tasks and self.propagation_wait > 0:
            log.info("DNS hook: waiting %.0f s for propagation", self.propagation_wait)
            self._sleep(self.propagation_wait)

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            try:
                self.run("clear", task)
            except ChallengeError as exc:
                log.warning("DNS hook: clearing %s failed: %s", task.dns_record_name, exc)

    def run(self, action: str, task: ChallengeTask) -> None:
        """Run the hook once; raises ``ChallengeError`` unless it exits 0 in time."""
        record = task.dns_record_name
        argv = [*self.argv, action, record, task.validation]
        env = dict(os.environ)
        env.update(self.env)
        env.update(
            {
                "CERTMAN_DNS_ACTION": action,
                "CERTMAN_DNS_NAME": task.identifier,
                "CERTMAN_DNS_DOMAIN": task.identifier.removeprefix("*."),
                "CERTMAN_DNS_RECORD": record,
                "CERTMAN_DNS_VALUE": task.validation,
            }
        )
        details = {"identifier": task.identifier, "record": record, "action": action}
        log.debug("DNS hook: %s %s", action, record)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                # Own process group, so a timeout kills the hook's children
                # too (a stuck curl would otherwise keep our pipes open).
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ChallengeError(
                f"DNS hook not found: {self.argv[0]}", code="challenge-hook-not-found", **details
            ) from exc
        except PermissionError as exc:
            raise ChallengeError(
                f"DNS hook is not executable: {self.argv[0]}",
                code="challenge-hook-not-found",
                **details,
            ) from exc
        with proc:
            try:
                stdout, stderr = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired as exc:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise ChallengeError(
                    f"DNS hook '{action} {record}' did not finish within {self.timeout:g} s",
                    code="challenge-hook-timeout",
                    **details,
                ) from exc
        if stdout:
            log.debug("DNS hook stdout: %s", _tail(stdout))
        if proc.returncode != 0:
            tail = _tail(stderr)
            raise ChallengeError(
                f"DNS hook '{action} {record}' failed with exit status {proc.returncode}"
                + (f": {tail}" if tail else ""),
                code="challenge-hook-failed",
                exit_status=proc.returncode,
                stderr=tail,
                **details,
            )
