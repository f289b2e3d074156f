"""The registry: runs, models, metrics, eval results and the promotion log in SQLite."""

from daemon.registry.models import ModelKind, RunStatus, Trigger
from daemon.registry.store import Registry

__all__ = ["ModelKind", "Registry", "RunStatus", "Trigger"]
