"""The public types keep the shape of the API kernelbox stays compatible with (ipybox 0.9.2).

ipybox's own tests (`make peer-test`, part of `make test`) compare ``result.images == []`` and
catch ``RuntimeError`` from ``kernel_id`` before ``connect()``; these checks fail fast, without
a gateway, when a type drifts.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import kernelbox
from kernelbox import ExecutionResult, InvalidStateError, KernelboxError, NotConnectedError

PACKAGE_DIR = Path(kernelbox.__file__).parent


def test_images_is_a_list_owned_by_the_result() -> None:
    given = [Path("a.png")]
    result = ExecutionResult(text=None, images=given)
    assert result.images == [Path("a.png")]
    assert type(result.images) is list
    given.append(Path("b.png"))
    assert result.images == [Path("a.png")]  # a copy, not the caller's list
    assert ExecutionResult(text="x").images == []


def test_result_fields_stay_read_only_and_hashable() -> None:
    result = ExecutionResult(text="4", images=[Path("a.png")])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "5"  # type: ignore[misc]
    assert hash(result) == hash(ExecutionResult(text="4", images=[Path("b.png")]))
    assert result == ExecutionResult(text="4", images=[Path("a.png")])


def test_state_errors_are_kernelbox_errors_and_runtime_errors() -> None:
    for error in (InvalidStateError, NotConnectedError):
        assert issubclass(error, KernelboxError)
        assert issubclass(error, RuntimeError)


def _raised_builtin_errors(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id in {"RuntimeError", "Exception"}:
                found.append((node.lineno, target.id))
    return found


def test_kernelbox_raises_no_bare_runtime_error() -> None:
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for line, name in _raised_builtin_errors(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(PACKAGE_DIR)}:{line} raises {name}")
    assert offenders == []
