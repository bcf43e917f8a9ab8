"""The GPU-only test file's imports resolve here, without a GPU.

tests/test_cuda.py skips everything on a machine without CUDA, and imports other test files'
helpers inside its tests, so that a change there fails those tests rather than the file's
collection. A renamed helper then goes unnoticed until a GPU runs the file: on the H200
(2026-11-30) four tests failed on ``from test_opcheck import arguments``, a helper that had
moved to op_cases.py. This reads every import in the file and checks each module and name
exists."""
from __future__ import annotations

import ast
import importlib
import os

import pytest

GPU_FILES = ("test_cuda.py",)
TESTS = os.path.dirname(os.path.abspath(__file__))


def imports_of(filename: str) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) for every import statement in the file."""
    with open(os.path.join(TESTS, filename)) as f:
        tree = ast.parse(f.read(), filename)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
    return found


@pytest.mark.parametrize("filename", GPU_FILES)
def test_every_import_resolves(filename):
    missing = []
    for module_name, name, line in imports_of(filename):
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            missing.append(f"line {line}: import {module_name}: {error}")
            continue
        if name is not None and not hasattr(module, name):
            try:  # a submodule: from package import submodule
                importlib.import_module(f"{module_name}.{name}")
            except ImportError:
                missing.append(f"line {line}: {module_name} has no {name!r}")
    assert not missing, f"{filename}: " + "; ".join(missing)


def test_the_check_sees_imports_inside_functions():
    found = imports_of("test_cuda.py")
    assert ("op_cases", None, next(line for m, n, line in found if m == "op_cases")) in found
    assert any(m == "torch.profiler" for m, _, _ in found)
