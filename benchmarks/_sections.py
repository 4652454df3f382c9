"""Sections of a report run one after another, each within its time budget.

What benchmarks/gpu_check.py is made of: a :class:`Section` is one function
returning Markdown lines; :func:`run_sections` runs them in order, each
within its budget and the run's deadline, and rewrites the :class:`Report`
after every one, so a run stopped from outside keeps what it finished and
says where it stopped. A section that raises or overruns is reported as such
and the next one runs.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNING = "running (if the run ended here, it was stopped)"


@dataclass
class Section:
    name: str
    title: str
    run: Callable[[Any], list[str]]  # context -> Markdown lines
    budget: float  # seconds this section may take at most
    plan: Callable[[Any], list[str]] | None = None  # what a dry run lists


class SectionTimeout(Exception):
    """A section overran its budget (raised by the alarm signal)."""


class SectionFailed(Exception):
    """A section ran, but what it checked failed; ``args[0]`` are its Markdown lines."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (where there is SIGALRM).

    A call blocked in C (a CUDA synchronisation) is interrupted only when it
    returns to Python; the shell wrapper's ``timeout`` is the hard stop.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "SIGALRM") or not in_main_thread or seconds == math.inf:
        yield  # no budget then: the deadline and the wrapper's hard limit remain
        return

    def expire(signum, frame):
        raise SectionTimeout(f"over its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Report:
    """A Markdown report: a header, a status table, then each section's lines."""

    path: Path
    header: list[str]
    sections: list[Section]
    footer: list[str] = field(default_factory=list)  # after the status table
    status: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    bodies: dict[str, list[str]] = field(default_factory=dict)

    def text(self) -> str:
        lines = [*self.header, "| section | status | seconds |", "| --- | --- | --- |"]
        for spec in self.sections:
            status, seconds = self.status.get(spec.name, ("not run", None))
            elapsed = "" if seconds is None else f"{seconds:.2f}"
            lines.append(f"| {spec.name} | {status} | {elapsed} |")
        lines += ["", *self.footer]
        for spec in self.sections:
            if spec.name in self.bodies:
                lines += [f"## {spec.title}", "", *self.bodies[spec.name]]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Write the report whole, atomically (a reader never sees half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(self.text())
        partial.replace(self.path)


def run_sections(context: Any, report: Report, *, deadline: float) -> bool:
    """Run ``report.sections`` in order before ``deadline`` (``time.monotonic()``).

    Returns whether every section ran and passed.
    """
    all_passed = True
    for spec in report.sections:
        left = deadline - time.monotonic()
        if left < 5:
            report.status[spec.name] = (f"not run: {max(left, 0):.0f} s left of the limit", None)
            report.write()
            all_passed = False
            continue
        report.status[spec.name] = (RUNNING, None)
        report.write()
        start = time.monotonic()
        try:
            with time_limit(min(spec.budget, left)):
                body, status = spec.run(context), "ok"
        except SectionFailed as failure:
            body, status = failure.args[0], "FAILED"
        except SectionTimeout as timeout:
            body, status = [f"Stopped: {timeout}.", ""], "TIMED OUT"
        except Exception:
            body, status = ["```text", traceback.format_exc().rstrip(), "```", ""], "ERROR"
        elapsed = time.monotonic() - start
        all_passed &= status == "ok"
        report.status[spec.name] = (status, elapsed)
        report.bodies[spec.name] = body
        report.write()
        print(f"[gpu_check] {spec.name}: {status} ({elapsed:.1f} s)", flush=True)
    return all_passed
