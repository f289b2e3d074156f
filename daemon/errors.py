"""The exception tree. ``str(e)`` is what the operator reads: what happened,
the numbers, and what to do next."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike

READING_NOTE = "while reading "
"""Prefix of the note :func:`note_reading` adds to an exception (PEP 678 ``__notes__``)."""


def note_reading(exc: BaseException, path: str | PathLike[str], line: int | None = None) -> None:
    """Record on ``exc`` which file (and line) was being read when it was raised.

    The innermost reader's note wins: an exception that already names a file is left alone.
    :func:`reading_location` gets it back, e.g. for preflight's "check crashed" message.
    """
    if reading_location(exc) is None:
        exc.add_note(f"{READING_NOTE}{path}" + (f" line {line}" if line else ""))


def reading_location(exc: BaseException) -> str | None:
    """``FILE`` or ``FILE line N`` from :func:`note_reading`, or None."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(READING_NOTE):
            return note[len(READING_NOTE) :]
    return None


@contextmanager
def reading(path: str | PathLike[str], line: int | None = None) -> Iterator[None]:
    """Any exception escaping the block names ``path`` (and ``line``): see :func:`note_reading`."""
    try:
        yield
    except Exception as exc:
        note_reading(exc, path, line)
        raise


class NightshiftError(Exception):
    """Base of every error nightshift reports to the operator."""


class ConfigError(NightshiftError):
    """The config file is missing, unreadable or invalid.

    Attributes:
        problems: every problem found, each naming the key path and legal range.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class PreflightFailed(NightshiftError):
    """One or more preflight checks failed; training was not started."""


class TrainingFailed(NightshiftError):
    """The training child failed: non-zero exit, signal, timeout, non-finite loss
    or missing outputs."""


class EvaluationFailed(NightshiftError):
    """The evaluation child failed or produced incomplete results."""


class PromotionRefused(NightshiftError):
    """A promotion could not be carried out (nothing was changed)."""


class RunLocked(NightshiftError):
    """Another run holds the run lock."""


class Interrupted(NightshiftError):
    """A run was stopped by a shutdown request (SIGTERM/SIGINT). Not a failure."""


class RegistryError(NightshiftError):
    """The registry cannot be opened or migrated, or a lookup found nothing."""


class SuiteError(NightshiftError):
    """The eval suite file, or an items/schema file it names, is missing or invalid.

    Attributes:
        problems: every problem found, each naming the key path
            (``categories[2].items[5].gold``) or ``file:line`` and what to do.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class RegistryDatabaseError(RegistryError):
    """SQLite failed (locked, read-only, full, corrupt); ``str()`` says what to do.

    Attributes:
        disk_full: the cause was a full disk (the pipeline frees its reserve and retries).
    """

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


class DuplicateNight(RegistryError):
    """A run for this night key already exists (the nightly run is idempotent)."""


class ModelFileError(NightshiftError):
    """A model file (``config.json``, tokenizer, weights header) is missing or unreadable;
    ``str(e)`` says which and how to fix it."""


class TemplateError(NightshiftError):
    """The chat template does not compile or refuses a conversation; ``str(e)`` says why."""


class NonFiniteLoss(RuntimeError):
    """Raised inside the training child to abort on a NaN/inf loss, a loss spike, or a
    night whose trained checkpoints all validate worse than the untrained adapter; the
    child turns it into its non-finite-loss exit code (a deterministic failure: not resumed)."""


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside the training child from mlx-lm's callback to end training early.

    Attributes:
        reason: ``deadline`` or ``early_stopping``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class StrictJSONError(ValueError):
    """Text refused by :func:`daemon.scoring.parse_strict_json` although Python's json accepts
    it: ``NaN``/``Infinity`` constants or a duplicate object key."""


class StateDirError(NightshiftError):
    """The state dir cannot be used safely: not writable, full, or holding a planted link."""


class FileAccessError(NightshiftError):
    """A file or directory the night needs could not be read or written (permission denied,
    read-only file system, disk full, missing): ``str(e)`` names the path and what to do.
    Built from the :class:`OSError` by :func:`describe_os_error`."""


_OS_ERROR_ADVICE = {
    errno.EACCES: "give the user running nightshift access to it (chmod/chown) or change the path in the config",
    errno.EPERM: "give the user running nightshift access to it (chmod/chown) or change the path in the config",
    errno.EROFS: "remount it read-write or point the config at a writable directory",
    errno.ENOSPC: "free disk space on that file system and run again",
    errno.EDQUOT: "free space within your disk quota and run again",
    errno.ENOENT: "check that the path in the config exists",
    errno.ENOTDIR: "a file stands where a directory is expected: move it or change the path in the config",
    errno.EISDIR: "a directory stands where a file is expected: change the path in the config",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) and run again",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an :class:`OSError`: what failed, on which path, and what to do.

    e.g. ``Read-only file system: /srv/state/runs/0003; remount it read-write or point the config
    at a writable directory``. The paths come from ``exc.filename``/``filename2``.
    """
    what = exc.strerror or type(exc).__name__
    paths = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    where = f": {' -> '.join(paths)}" if paths else "" if exc.strerror else f" ({exc})"
    advice = _OS_ERROR_ADVICE.get(exc.errno or 0, "check the path, its permissions and the disk, then run again")
    return f"{what}{where}; {advice}"


class ReleaseCorrupt(NightshiftError):
    """A release's files do not match its manifest (missing, truncated, altered).

    Attributes:
        problems: one line per file found wrong.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


EXCERPT_CHARS = 60
"""Most characters of an offending value quoted in an error message."""


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, bounded ``repr`` of an offending value for an error message.

    Built with :mod:`reprlib`, so a huge or deeply nested value (an expanded
    YAML alias bomb) costs no more than its first few elements; the result is
    cut to ``limit`` characters and says so with ``...``.
    """
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxdict = short.maxlist = short.maxtuple = short.maxset = 4
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class HandoffFailed(NightshiftError):
    """Handing a release to the server, or verifying that it serves it, failed.

    The message names the command or URL and what went wrong; the promotion is
    rolled back by the caller.
    """
