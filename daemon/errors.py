"""The exception tree. ``str(e)`` is what the operator reads: what happened,
the numbers, and what to do next."""

from __future__ import annotations


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
