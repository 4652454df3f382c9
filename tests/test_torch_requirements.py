"""The PyTorch minimum version: stated, checked on import, covering every torch API used."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from functools import reduce
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from svdpi.torch._requirements import MINIMUM_TORCH, check_torch_version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Every module-level torch name that backends/torch uses, with the release
# that introduced it where that is later than 2.0 (torch.func, autograd
# Functions with setup_context / generate_vmap_rule, torch.compile: 2.0).
# A name missing here fails test_every_torch_api_the_adapter_uses_is_listed:
# look up when it appeared and raise MINIMUM_TORCH if needed.
TORCH_APIS = {
    "torch.compiler.is_compiling": (2, 3),
    **dict.fromkeys(
        [
            "torch.Tensor",
            "torch._C._are_functorch_transforms_active",
            "torch.__version__",
            "torch._dynamo.graph_break",
            "torch.abs",
            "torch.add",
            "torch.amax",
            "torch.aminmax",
            "torch.any",
            "torch.arange",
            "torch.argmax",
            "torch.autocast",
            "torch.autograd.Function",
            "torch.baddbmm",
            "torch.bmm",
            "torch.cat",
            "torch.channels_last",
            "torch.channels_last_3d",
            "torch.conj",
            "torch.contiguous_format",
            "torch.device",
            "torch.diag_embed",
            "torch.diagonal",
            "torch.distributed.all_reduce",
            "torch.distributed.get_world_size",
            "torch.distributed.group.WORLD",
            "torch.distributed.is_available",
            "torch.distributed.is_initialized",
            "torch.div",
            "torch.dtype",
            "torch.empty",
            "torch.eq",
            "torch.eye",
            "torch.finfo",
            "torch.float32",
            "torch.float64",
            "torch.floor",
            "torch.full",
            "torch.full_like",
            "torch.inference_mode",
            "torch.is_grad_enabled",
            "torch.is_inference_mode_enabled",
            "torch.isfinite",
            "torch.lerp",
            "torch.linalg.eigh",
            "torch.linalg.svd",
            "torch.log1p",
            "torch.log2",
            "torch.long",
            "torch.matmul",
            "torch.maximum",
            "torch.memory_format",
            "torch.minimum",
            "torch.mul",
            "torch.nn.Module",
            "torch.nn.Parameter",
            "torch.nn.init.ones_",
            "torch.nn.init.zeros_",
            "torch.no_grad",
            "torch.nonzero",
            "torch.ones",
            "torch.ones_like",
            "torch.rsqrt",
            "torch.sub",
            "torch.sum",
            "torch.tensor",
            "torch.triu_indices",
            "torch.utils._python_dispatch._get_current_dispatch_mode",
            "torch.view_as_real",
            "torch.where",
            "torch.zeros",
            "torch.zeros_like",
        ],
        (2, 0),
    ),
}


def _torch_names_used(path):
    """Dotted ``torch.…`` names in a module's code, through its import aliases."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch":
                    aliases[alias.asname or "torch"] = alias.name if alias.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in aliases:
            parts = [aliases[node.id]]
            while isinstance(parents.get(node), ast.Attribute) and parents[node].value is node:
                node = parents[node]
                parts.append(node.attr)
            names.add(".".join(parts))
    return names


def test_every_torch_api_the_adapter_uses_is_listed():
    used = set().union(*map(_torch_names_used, (ROOT / "backends" / "torch").glob("*.py")))
    assert used, "the scan found nothing: it is broken"
    assert used <= TORCH_APIS.keys(), sorted(used - TORCH_APIS.keys())


def test_the_listed_apis_exist_and_set_the_minimum():
    import importlib

    for name in TORCH_APIS:
        head, *rest = name.split(".")
        module = importlib.import_module(head)
        reduce(getattr, rest, module)  # AttributeError names a missing one
    assert max(TORCH_APIS.values()) == MINIMUM_TORCH


def test_the_minimum_is_stated_in_the_metadata_and_the_docs():
    minimum = ".".join(map(str, MINIMUM_TORCH))
    metadata = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'torch = ["torch>={minimum}"' in metadata
    assert f"PyTorch >= {minimum}" in (ROOT / "docs" / "getting_started.rst").read_text()


@pytest.mark.parametrize("version", ["2.3.0", "2.3.1+cu121", "2.14.1+cpu", "3.0.0a0+git1234"])
def test_supported_versions_pass(version):
    check_torch_version(version)


@pytest.mark.parametrize("version", ["2.2.2", "2.1.0+cpu", "1.13.1"])
def test_older_versions_are_refused_with_a_clear_message(version):
    message = rf"needs PyTorch >= 2\.3 .*this is PyTorch {re.escape(version)}\."
    with pytest.raises(ImportError, match=message):
        check_torch_version(version)


def test_importing_svdpi_torch_on_an_older_torch_raises_import_error():
    code = textwrap.dedent(
        """
        import torch
        torch.__version__ = "2.2.2"  # what an older install reports
        try:
            import svdpi.torch
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("svdpi.torch imported on torch 2.2")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "needs PyTorch >= 2.3" in result.stdout
    assert "pip install 'torch>=2.3'" in result.stdout


def test_the_torch_extra_brings_numpy():
    """pip install "svdpi[torch]" then the README's NumPy example: 0.1 had no NumPy there.

    Without NumPy, the README's first snippet fails and every ``import torch``
    warns "Failed to initialize NumPy".
    """
    metadata = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (torch_extra,) = re.findall(r"^torch = \[(.*)\]$", metadata, flags=re.MULTILINE)
    assert re.search(r'"numpy>=[\d.]+"', torch_extra), torch_extra
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install "svdpi[torch]"' in readme
    assert "import numpy as np" in readme
