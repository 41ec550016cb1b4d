"""HTTP-01 through a web server you already run: write tokens into its document root.

``WebrootSolver(dir)`` writes each key authorization to
``dir/.well-known/acme-challenge/<token>`` (mode 0644, so the web server's
user can read it), and removes it after validation, together with the two
directories if it created them and they are empty.

Safety: the web root is often writable by other, less trusted users (a CMS,
deploy scripts) while certman may run as root. Everything below ``dir`` is
therefore opened relative to its parent's descriptor with ``O_NOFOLLOW``: a
symlink planted at ``.well-known`` or ``acme-challenge`` is refused
(``ChallengeError`` code ``"challenge-unsafe-path"``) instead of followed,
and the token file is written under a temporary name created with
``O_EXCL | O_NOFOLLOW`` and renamed into place (``rename`` replaces a planted
symlink rather than writing through it). ``dir`` itself may be a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from certman import _atomic
from certman.challenges.base import ChallengeTask
from certman.challenges.http01 import _require_http01, is_valid_token, validate_token
from certman.errors import ChallengeError

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PARTS = (".well-known", "acme-challenge")


class WebrootSolver:
    """Answers HTTP-01 by writing token files under a web server's document root.

    Thread safe: concurrent orders may share one instance.
    """

    challenge_types: tuple[str, ...] = ("http-01",)

    def __init__(
        self, webroot: str | os.PathLike[str], *, dir_mode: int = 0o755, file_mode: int = 0o644
    ) -> None:
        self.webroot = Path(webroot)
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self._lock = threading.Lock()
        self._created: set[str] = set()  # which of _PARTS this solver made
        # present/cleanup of concurrent orders are serialised so a cleanup
        # never removes a directory another order is about to write into.
        self._op_lock = threading.Lock()

    def token_path(self, token: str) -> Path:
        """Where the file for ``token`` goes."""
        return self.webroot.joinpath(*_PARTS, validate_token(token))

    def _fail(self, exc: OSError, where: Path) -> ChallengeError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            return ChallengeError(
                f"refusing to write HTTP-01 token through {where}: it is a symlink or "
                "not a directory (remove it, or point --webroot at the real directory)",
                code="challenge-unsafe-path",
                path=str(where),
            )
        return ChallengeError(
            f"cannot write HTTP-01 token under {where}: {exc.strerror or exc}",
            code="challenge-webroot-io",
            path=str(where),
        )

    @contextlib.contextmanager
    def _challenge_dir(self, *, create: bool) -> Iterator[int | None]:
        """Descriptor of the challenge directory; ``None`` if absent and not ``create``."""
        try:
            fd = os.open(self.webroot, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            if not create:
                yield None
                return
            raise ChallengeError(
                f"webroot {self.webroot} does not exist",
                code="challenge-webroot-missing",
                path=str(self.webroot),
            ) from exc
        except OSError as exc:
            raise self._fail(exc, self.webroot) from exc
        try:
            where = self.webroot
            for part in _PARTS:
                where = where / part
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    try:
                        os.mkdir(part, self.dir_mode, dir_fd=fd)
                        with self._lock:
                            self._created.add(part)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise self._fail(exc, where) from exc
                    try:
                        nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        raise self._fail(exc, where) from exc
                    os.fchmod(nfd, self.dir_mode)
                except OSError as exc:
                    raise self._fail(exc, where) from exc
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def present(self, tasks: Sequence[ChallengeTask]) -> None:
        for task in tasks:
            _require_http01(task)
            validate_token(task.token)
        with self._op_lock, self._challenge_dir(create=True) as dfd:
            assert dfd is not None
            for task in tasks:
                self._write(dfd, task.token, task.validation.encode("ascii"))
                log.debug("webroot: wrote token %s for %s", task.token, task.identifier)

    def _write(self, dfd: int, token: str, data: bytes) -> None:
        try:
            _atomic.replace_at(dfd, token, data, self.file_mode, tmp_prefix=".certman-")
        except OSError as exc:
            raise self._fail(exc, self.webroot.joinpath(*_PARTS, token)) from exc

    def cleanup(self, tasks: Sequence[ChallengeTask]) -> None:
        with self._op_lock:
            with self._challenge_dir(create=False) as dfd:
                if dfd is None:
                    return
                for task in tasks:
                    if is_valid_token(task.token):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(task.token, dir_fd=dfd)
            self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        """Remove the directories this solver created, if they are empty now."""
        with self._lock:
            created = set(self._created)
        parent = self.webroot / _PARTS[0]
        for part, where in (("acme-challenge", parent), (".well-known", self.webroot)):
            if part not in created:
                continue
            try:
                flags = _DIR_FLAGS if where != self.webroot else os.O_RDONLY | os.O_DIRECTORY
                fd = os.open(where, flags | os.O_CLOEXEC)
            except OSError:
                return
            try:
                os.rmdir(part, dir_fd=fd)
                with self._lock:
                    self._created.discard(part)
            except OSError:
                return  # not empty (another order's token, or the user's files): keep it
            finally:
                os.close(fd)
