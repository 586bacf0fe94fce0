"""Find code that could run what it loads: pickle and its kin, unsafe torch/numpy/yaml loads, eval/exec.

By the syntax tree, not by grep: `model.eval()` is not eval(), and a comment
that says "no pickle" is not pickle.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Modules that unpickle (or unmarshal) what they read.
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.expr) -> str:
    """`torch.load` for the call's function, '' when it is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)):
        return f"{base}.{node.attr}"
    return ""


def _call_finding(call: ast.Call) -> str | None:
    name = _dotted(call.func)
    if name in ("eval", "exec"):
        return f"{name}()"
    if name == "torch.load" and not _is_true(_keyword(call, "weights_only")):
        return "torch.load() without weights_only=True"
    if name in ("np.load", "numpy.load") and _is_true(_keyword(call, "allow_pickle")):
        return f"{name}() with allow_pickle=True"
    if name in ("yaml.load", "yaml.load_all"):
        loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        if loader is None or _dotted(loader).rpartition(".")[2] not in SAFE_YAML_LOADERS:
            return f"{name}() without SafeLoader"
    if name in ("yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "pandas.read_pickle"):
        return f"{name}()"
    return None


def scan_source(source: str, path: str = "<source>") -> list[Finding]:
    findings = []
    for node in ast.walk(ast.parse(source, path)):
        what = None
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] in PICKLING_MODULES]
            what = f"import {', '.join(names)}" if names else None
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLING_MODULES:
            what = f"from {node.module} import ..."
        elif isinstance(node, ast.Call):
            what = _call_finding(node)
        if what:
            findings.append(Finding(path, node.lineno, what))
    return findings


def scan_tree(root: Path, folders: list[str]) -> list[Finding]:
    return [finding for folder in folders for path in sorted((root / folder).rglob("*.py"))
            for finding in scan_source(path.read_text(), str(path.relative_to(root)))]
