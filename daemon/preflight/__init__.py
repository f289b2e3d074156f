"""Preflight: catch at 10 PM what would fail at 1 AM.

Named checks of the config, the base model, the dataset, the machine and the
serving layer, each ``ok``, ``warn`` or ``fail`` with a one-line message that
names the file, line or key and the fix. Any ``fail`` stops the run before
training. ``smoke=True`` adds a real load-loss-generate-train rehearsal in a
child process. See :func:`run_preflight`.
"""

from daemon.preflight.report import CheckResult, Level, PreflightReport
from daemon.preflight.runner import run_preflight

__all__ = ["CheckResult", "Level", "PreflightReport", "run_preflight"]
