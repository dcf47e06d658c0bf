"""Static conformance: every TensorRT name the project uses exists in TensorRT 10.3 and 11.4.

The name lists in tests/data/ were extracted from the releases' bindings wheels by
tests/data/extract_tensorrt_names.sh (no TensorRT libraries or GPU needed). The rule, over every
module whose source contains ``import tensorrt`` or calls ``load_tensorrt(``:

- every attribute chain through the tensorrt module, held as ``trt`` (``trt.BuilderFlag.FP16``,
  ``self.trt.LayerInformationFormat.JSON``), and ``getattr``/``hasattr(trt, "NAME")``: each
  component after ``trt`` is checked;
- every attribute used on a TensorRT object, held in a variable or attribute named in
  ``TRT_OBJECTS`` (``engine.get_tensor_name``, ``runner.context.profiler``);
- every public method of a subclass of a TensorRT class (``report_layer_time``: a misspelt
  override is never called, silently);
- completeness of the naming convention: a variable assigned straight from a call on a TensorRT
  object must be named in ``TRT_OBJECTS`` unless the call returns a plain value (``PLAIN_RESULTS``).

A use under ``if trt_major(trt) >= 11`` (or ``< 11``, ``== 10``, alone or in an ``and``) is checked
against the releases the guard admits only.
"""

from __future__ import annotations

import ast
import operator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
RELEASES = {10: "tensorrt_10.3_names.txt", 11: "tensorrt_11.4_names.txt"}
TRT_OBJECTS = frozenset(
    {
        "builder",
        "network",
        "parser",
        "config",
        "timing_cache",
        "opt_profile",
        "runtime",
        "engine",
        "context",
        "inspector",
        "trt_logger",
        "tensor",
    }
)
PLAIN_RESULTS = frozenset(
    {
        "build_serialized_network",
        "get_tensor_name",
        "get_tensor_shape",
        "get_tensor_mode",
        "get_tensor_dtype",
        "get_max_output_size",
        "get_engine_information",
        "get_layer_information",
        "get_error",
        "serialize",
        "parse",
        "set_timing_cache",
        "init_libnvinfer_plugins",
        "execute_async_v3",
        "set_input_shape",
        "set_tensor_address",
        "set_output_allocator",
        "nptype",
    }
)
_OPS = {
    ast.GtE: operator.ge,
    ast.Gt: operator.gt,
    ast.LtE: operator.le,
    ast.Lt: operator.lt,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def load_names() -> dict[int, frozenset[str]]:
    return {major: frozenset((DATA / name).read_text(encoding="utf-8").split()) for major, name in RELEASES.items()}


def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _guard(test: ast.AST) -> set[int] | None:
    """The majors a ``trt_major(trt) <op> N`` test admits (None: not a guard)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        found = [g for g in map(_guard, test.values) if g is not None]
        return set.intersection(*found) if found else None
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.left, ast.Call)
        and isinstance(test.left.func, ast.Name)
        and test.left.func.id == "trt_major"
        and isinstance(test.comparators[0], ast.Constant)
        and type(test.ops[0]) in _OPS
    ):
        return {m for m in RELEASES if _OPS[type(test.ops[0])](m, test.comparators[0].value)}
    return None


class Checker(ast.NodeVisitor):
    """Collects (line, name, majors it must exist in) uses and naming-convention problems."""

    def __init__(self) -> None:
        self.uses: list[tuple[int, str, frozenset[int]]] = []
        self.problems: list[str] = []
        self.majors = frozenset(RELEASES)

    def _use(self, node: ast.AST, name: str) -> None:
        self.uses.append((getattr(node, "lineno", 0), name, self.majors))

    def _branch(self, test: ast.AST, body: list[ast.AST] | ast.AST, orelse: list[ast.AST] | ast.AST) -> None:
        self.visit(test)
        admitted = _guard(test)
        before = self.majors
        for part, majors in ((body, admitted), (orelse, None if admitted is None else set(RELEASES) - admitted)):
            self.majors = before & frozenset(majors) if majors is not None else before
            for child in part if isinstance(part, list) else [part]:
                self.visit(child)
        self.majors = before

    def visit_If(self, node: ast.If) -> None:
        self._branch(node.test, node.body, node.orelse)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._branch(node.test, node.body, node.orelse)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain is not None and "trt" in chain[:-1]:
            if node is not getattr(self, "_inner", None):
                for name in chain[chain.index("trt") + 1 :]:
                    self._use(node, name)
            self._skip_chain(node)
            return
        if chain is not None and len(chain) >= 2 and chain[-2] in TRT_OBJECTS:
            self._use(node, chain[-1])
        self.generic_visit(node)

    def _skip_chain(self, node: ast.Attribute) -> None:
        inner = node.value
        while isinstance(inner, ast.Attribute):
            inner = inner.value
        self.visit(inner)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and _chain(node.args[0]) is not None
            and _chain(node.args[0])[-1] == "trt"
            and isinstance(node.args[1], ast.Constant)
        ):
            self._use(node, node.args[1].value)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if any((_chain(base) or [""])[0] == "trt" for base in node.bases):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    self._use(item, item.name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
            chain = _chain(value.func) or []
            on_trt = len(chain) >= 2 and (chain[-2] in TRT_OBJECTS or "trt" in chain[:-1])
            if on_trt and chain[-1] not in PLAIN_RESULTS:
                for target in node.targets:
                    name = (_chain(target) or ["?"])[-1]
                    if name not in TRT_OBJECTS:
                        self.problems.append(
                            f"line {node.lineno}: {name} = ...{chain[-1]}(...): name TensorRT "
                            f"objects one of {sorted(TRT_OBJECTS)}, or add {chain[-1]} to PLAIN_RESULTS"
                        )
        self.generic_visit(node)


def check_source(source: str, names: dict[int, frozenset[str]]) -> list[str]:
    """Problems in ``source``: unknown names per release, and naming-convention breaks."""
    checker = Checker()
    checker.visit(ast.parse(source))
    problems = list(checker.problems)
    for line, name, majors in checker.uses:
        missing = [m for m in sorted(majors) if name not in names[m]]
        if missing:
            problems.append(
                f"line {line}: {name!r} is not in TensorRT {', '.join(RELEASES[m].split('_')[1] for m in missing)}"
            )
    return problems


def trt_modules() -> list[Path]:
    files = sorted((ROOT / "jdnas_sdk").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    return [
        f for f in files if any(mark in f.read_text(encoding="utf-8") for mark in ("import tensorrt", "load_tensorrt("))
    ]


@pytest.fixture(scope="module")
def names() -> dict[int, frozenset[str]]:
    return load_names()


def test_name_lists_are_the_releases(names: dict[int, frozenset[str]]) -> None:
    common = {
        "Builder",
        "OnnxParser",
        "Runtime",
        "IOutputAllocator",
        "get_max_output_size",
        "init_libnvinfer_plugins",
        "EngineInspector",
        "LayerInformationFormat",
        "ProfilingVerbosity",
        "DETAILED",
        "create_timing_cache",
        "execute_async_v3",
        "set_tensor_address",
        "STRONGLY_TYPED",
        "IProfiler",
        "report_layer_time",
    }
    for major in RELEASES:
        assert common <= names[major], (major, common - names[major])
    assert {"FP16", "EXPLICIT_BATCH", "OBEY_PRECISION_CONSTRAINTS"} <= names[10]
    assert not {"FP16", "EXPLICIT_BATCH", "OBEY_PRECISION_CONSTRAINTS"} & names[11]  # 11: strongly typed only


def test_project_uses_only_names_of_both_releases(names: dict[int, frozenset[str]]) -> None:
    modules = trt_modules()
    assert {"trt_engine.py", "trt_runner.py", "tensorrt_backend.py"} <= {m.name for m in modules}
    problems = [
        f"{m.relative_to(ROOT)}: {p}" for m in modules for p in check_source(m.read_text(encoding="utf-8"), names)
    ]
    assert not problems, "\n".join(problems)


def test_checker_catches_unguarded_and_misspelt_uses(names: dict[int, frozenset[str]]) -> None:
    bad = """
import tensorrt as trt
config.set_flag(trt.BuilderFlag.FP16)
context.execute_async_v2(bindings, stream)
if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
    pass
x = getattr(trt, "EXPLICIT_BATCH")
class P(trt.IProfiler):
    def report_layer_times(self, name, ms):
        pass
ctx = engine.create_execution_context()
"""
    problems = check_source(bad, names)
    joined = "\n".join(problems)
    assert "'FP16' is not in TensorRT 11.4" in joined
    assert "'execute_async_v2' is not in TensorRT 10.3, 11.4" in joined
    assert "'EXPLICIT_BATCH' is not in TensorRT 11.4" in joined
    assert "'report_layer_times'" in joined
    assert "ctx = ...create_execution_context" in joined


def test_checker_accepts_guarded_uses(names: dict[int, frozenset[str]]) -> None:
    good = """
import tensorrt as trt
if use_fp16 and trt_major(trt) < 11:
    config.set_flag(trt.BuilderFlag.FP16)
else:
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if trt_major(trt) == 10 else 0
context = engine.create_execution_context()
"""
    assert check_source(good, names) == []
    # the same FP16 use in the 11-only branch is caught
    assert check_source(good.replace("< 11", ">= 11"), names)
