"""The fault suite's tally: every test reports the faults it injected and survived;
the totals are printed at the end of the session (``faults injected, survived``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class FaultLedger:
    """Faults injected and survived (nothing lost) in this session."""

    injected: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)


LEDGER = FaultLedger()


class Fault:
    """One fault of a test: ``with fault(name): inject, then assert nothing was lost``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Fault:
        LEDGER.injected.append(self.name)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            LEDGER.survived.append(self.name)


@pytest.fixture()
def fault() -> Iterator[type[Fault]]:
    """``with fault("promote:intent-written"): ...`` counts one injected fault,
    survived when the block's assertions pass."""
    yield Fault


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.injected:
        return
    lost = [n for n in LEDGER.injected if n not in LEDGER.survived]
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line(
        f"faults injected: {len(LEDGER.injected)}, survived with nothing lost: {len(LEDGER.survived)}"
    )
    for name in lost:
        terminalreporter.write_line(f"  NOT survived: {name}")
