"""Dependencies point one way: a module never imports a layer above its own, at the top or in a function."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advlab"
# layer -> the advlab packages/modules it must never import
FORBIDDEN = {
    "config": {"recipes", "engine", "evaluation", "runs", "data", "models", "attacks", "reports"},
    "options": {"recipes", "engine", "evaluation", "runs", "config", "reports"},
    "epochs": {"recipes", "engine", "evaluation", "runs", "config", "reports"},
    "attacks": {"recipes", "engine", "evaluation", "runs", "data", "reports"},
    "data": {"recipes", "engine", "evaluation", "runs", "models", "attacks", "config", "reports"},
    "models": {"recipes", "engine", "evaluation", "runs", "data", "attacks", "reports"},
    "recipes": {"engine", "evaluation", "runs", "reports"},
    "runs": {"engine", "evaluation", "recipes", "reports"},
    "evaluation": {"engine", "recipes", "reports"},
    "engine": {"reports"},
    # process groups and collectives sit at the bottom: data, recipes, evaluation and the engine use them
    "seeds": {"config", "options", "epochs", "recipes", "engine", "evaluation", "runs", "data", "models",
              "attacks", "reports", "distributed"},
    "distributed": {"config", "options", "epochs", "recipes", "engine", "evaluation", "runs", "data", "models",
                    "attacks", "reports"},
    # reports read finished (or killed) runs: they sit on top of runs, config and evaluation, never train
    "reports": {"engine", "recipes"},
}


def advlab_imports(path: Path) -> set[str]:
    """The advlab top-level names a module imports (absolute or relative), anywhere in the file."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]  # e.g. ("advlab", "recipes", "labels")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "advlab" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = (node.module or "").split(".")
            if parts and parts[0] == "advlab":
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_module_imports_a_layer_above_it(path):
    layer = path.relative_to(SRC).parts[0].removesuffix(".py")
    if layer not in FORBIDDEN:
        return
    wrong = advlab_imports(path) & FORBIDDEN[layer]
    assert not wrong, f"{path.relative_to(SRC)} ({layer}) imports {sorted(wrong)}"


def test_the_check_sees_relative_and_function_level_imports(tmp_path):
    fake = SRC / "evaluation" / "_probe_for_test.py"
    fake.write_text("def f():\n    from ..engine import trainer\n    import advlab.recipes\n")
    try:
        assert {"engine", "recipes"} <= advlab_imports(fake)
    finally:
        fake.unlink()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_NAMES = {_module_name(p) for p in MODULES}


def module_imports(path: Path) -> set[str]:
    """The advlab modules a module imports, anywhere in the file (type-only imports under TYPE_CHECKING too):
    ``from pkg import name`` counts as an import of the module ``pkg.name`` when there is one, else of ``pkg``."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULE_NAMES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in MODULE_NAMES:
                    found.add(target)
                elif source in MODULE_NAMES:
                    found.add(source)
    found.discard(name)
    return found


def test_no_two_modules_import_each_other_even_for_types_only():
    graph = {_module_name(p): module_imports(p) for p in MODULES}
    mutual = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                     if a in graph.get(b, ()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert not mutual, f"modules that import each other: {mutual}"


def test_the_cycle_check_sees_a_type_only_import(tmp_path):
    fake = SRC / "evaluation" / "_probe_cycle_a.py"
    other = SRC / "evaluation" / "_probe_cycle_b.py"
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._probe_cycle_b import B\n")
    other.write_text("from ._probe_cycle_a import A\n")
    try:
        MODULE_NAMES.update({"advlab.evaluation._probe_cycle_a", "advlab.evaluation._probe_cycle_b"})
        assert "advlab.evaluation._probe_cycle_b" in module_imports(fake)
        assert "advlab.evaluation._probe_cycle_a" in module_imports(other)
    finally:
        fake.unlink()
        other.unlink()
        MODULE_NAMES.difference_update({"advlab.evaluation._probe_cycle_a", "advlab.evaluation._probe_cycle_b"})
