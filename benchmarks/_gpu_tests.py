"""The GPU tests of benchmarks/gpu_check.py: select them, run pytest, summarise its JUnit XML.

This module is also the pytest plugin that does the selecting
(``pytest -p _gpu_tests``, with ``benchmarks/`` on ``PYTHONPATH``): it keeps
the tests that need a GPU (:func:`needs_gpu`: those marked ``gpu``, those
run on the ``cupy`` backend of the ``xp`` fixture, the examples of
``svdpi.cupy``'s docstrings) and deselects the rest (CI runs those). It
imports nothing beyond the standard library, so loading it into a pytest run
changes nothing else there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

PLUGIN = Path(__file__).stem


def needs_gpu(item) -> bool:
    """Whether a collected test needs a GPU.

    Marked ``gpu``; or parametrised with the ``cupy`` backend (id ``cupy``),
    or with an example of ``svdpi.cupy``'s docstrings (ids ``svdpi.cupy.…``,
    collected only where CuPy has a GPU).
    """
    if item.get_closest_marker("gpu") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    return any(part == "cupy" or part.startswith("svdpi.cupy.") for part in callspec.id.split("-"))


def pytest_collection_modifyitems(config, items):
    """pytest hook: keep only the tests that need a GPU."""
    selected = [item for item in items if needs_gpu(item)]
    deselected = [item for item in items if not needs_gpu(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


def command(test_paths: list[str], junit: Path) -> list[str]:
    """The pytest command line: the GPU tests under ``test_paths``, JUnit XML to ``junit``."""
    line = [sys.executable, "-m", "pytest", *test_paths, "-p", PLUGIN]
    line += ["-q", "-rfE", "-p", "no:cacheprovider", "-p", "no:randomly"]
    # A module that fails to import (a package the GPU machine lacks) must not
    # stop the others: its error is counted and shown.
    line += [f"--junitxml={junit}", "--continue-on-collection-errors"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        line.append("--timeout=120")  # one hung test must not take the whole budget
    return line


def run(
    test_paths: list[str], *, junit: Path, log: Path, cwd: Path, timeout: float
) -> tuple[bool, Counter, list[str]]:
    """Run the GPU tests: ``(pytest passed, outcome counts, Markdown lines)``.

    pytest's output is written to ``log``.
    """
    junit.unlink(missing_ok=True)
    line = command(test_paths, junit)
    environment = dict(os.environ)
    paths = [str(Path(__file__).parent), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    # The tests of the device check itself skip themselves inside it.
    environment["SVDPI_IN_DEVICE_CHECK"] = "1"
    try:
        result = subprocess.run(
            line,
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output, status = result.stdout + result.stderr, f"pytest exit status {result.returncode}"
        passed = result.returncode in (0, 5)  # 5: no test selected (none needs a GPU)
    except subprocess.TimeoutExpired as error:
        output = error.stdout or ""
        if isinstance(output, bytes):  # TimeoutExpired may hold bytes even with text=True
            output = output.decode(errors="replace")
        status, passed = f"pytest stopped after {timeout:.0f} s (its budget)", False
    log.write_text(output)
    lines = [f"`pytest {' '.join(line[3:])}`: {status}.", ""]
    counts = Counter()
    if junit.exists():
        with contextlib.suppress(ElementTree.ParseError):  # a file cut short by a kill
            counts, summary = summarize_junit(junit)
            lines += summary
    tail = [text for text in output.splitlines() if text.strip()][-15:]
    lines += ["Last lines of the pytest output:", "", "```text", *tail, "```", ""]
    return passed, counts, lines


def summarize_junit(path: Path) -> tuple[Counter, list[str]]:
    """Outcome counts of a pytest JUnit XML file, and in Markdown its failures and skips."""
    root = ElementTree.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, skipped = [], Counter()
    for case in cases:
        name = "::".join(filter(None, [case.get("classname", ""), case.get("name", "")]))
        for kind in ("failure", "error"):
            for outcome in case.findall(kind):
                message = (outcome.get("message") or outcome.text or "").strip()
                failed.append((kind, name, message.splitlines()[0] if message else ""))
        for outcome in case.findall("skipped"):
            skipped[(outcome.get("message") or "").strip()] += 1
    n_failed = sum(kind == "failure" for kind, _, _ in failed)
    n_errors = len(failed) - n_failed
    n_skipped = sum(skipped.values())
    n_passed = len(cases) - len({name for _, name, _ in failed}) - n_skipped
    counts = Counter(passed=n_passed, failed=n_failed, errors=n_errors, skipped=n_skipped)
    lines = [
        f"**{n_passed} passed, {n_failed} failed, {n_errors} errors, {n_skipped} skipped** "
        f"({len(cases)} tests)",
        "",
    ]
    if failed:
        lines += ["| outcome | test | message |", "| --- | --- | --- |"]
        lines += [
            f"| {kind} | `{name}` | {message[:300].replace('|', '/')} |"
            for kind, name, message in failed
        ]
        lines.append("")
    if skipped:
        lines += ["Skip reasons:", ""]
        lines += [f"- {count} × {reason}" for reason, count in skipped.most_common(15)]
        lines.append("")
    return counts, lines
