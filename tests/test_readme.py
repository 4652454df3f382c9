"""The README's Python examples run as written (CuPy's only where CuPy is installed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _needs(block: str) -> list[str]:
    return [m for m in ("cupy", "torch", "jax") if re.search(rf"^import {m}\b", block, re.M)]


def test_the_readme_has_examples_for_every_library():
    needed = {name for block in _blocks() for name in _needs(block)}
    assert {"torch", "jax", "cupy"} <= needed


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index):
    blocks = _blocks()
    for name in _needs(blocks[index]):
        pytest.importorskip(name)
    # A block may use names an earlier block of the same library defined
    # (torch, svdpi.torch): run the earlier blocks first, in one namespace.
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks[: index + 1]):
        if all(_can_import(name) for name in _needs(block)):
            exec(compile(block, f"README.md block {number}", "exec"), namespace)


def _can_import(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
