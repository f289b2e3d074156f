"""The registry: runs, models, metrics, eval results and the promotion log in SQLite."""

from daemon.registry.models import ModelKind, RunStatus, Trigger
from daemon.registry.store import DuplicateNight, Registry

__all__ = ["DuplicateNight", "ModelKind", "Registry", "RunStatus", "Trigger"]
