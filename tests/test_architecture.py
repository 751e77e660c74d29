"""The layout's rules, read from the source itself (every import, also those inside functions).

- The science folders work without MLflow or Optuna: they never import them.
- Data flows one way: no module imports another that (directly or not) imports it back.
- No module reaches into another's private names (a leading underscore), ours or a library's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("qvae", "tuning")
SCIENCE = ("qvae/data", "qvae/priors", "qvae/models", "qvae/metrics", "qvae/train.py", "qvae/config.py",
           "qvae/plots.py")
TRACKING_ONLY = ("mlflow", "optuna")
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public despite the underscore


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def internal_edges() -> dict[str, set[str]]:
    """Module -> the project modules it imports (`from pkg import mod` counts as importing pkg.mod)."""
    files = source_files()
    edges: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for module, names, _ in imports(path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in files] or [module]
            edges[name] |= {t for t in targets if t in files and t != name}
    return edges


def test_the_science_folders_never_import_mlflow_or_optuna():
    offenders = []
    for folder in SCIENCE:
        target = REPO / folder
        for path in [target] if target.is_file() else sorted(target.rglob("*.py")):
            offenders += [f"{path.relative_to(REPO)}:{line} imports {module}" for module, _, line in imports(path)
                          if module.split(".")[0] in TRACKING_ONLY]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycles():
    edges = internal_edges()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(cycles)


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, path in source_files().items():
        for module, names, line in imports(path):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if any(part.startswith("_") and part != "__future__" for part in module.split(".")) or private:
                offenders.append(f"{path.relative_to(REPO)}:{line} from {module} import {', '.join(names)}")
    assert not offenders, "\n".join(offenders)


def test_no_module_reads_another_objects_private_attributes():
    offenders = []
    for name, path in source_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in NAMEDTUPLE_API
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", ["qvae/data", "qvae/priors", "qvae/models", "qvae/metrics", "qvae/tracking"])
def test_each_folder_is_a_package_of_small_modules(folder):
    modules = sorted((REPO / folder).glob("*.py"))
    assert (REPO / folder / "__init__.py").exists()
    too_long = [f"{p.relative_to(REPO)}: {len(p.read_text().splitlines())} lines" for p in modules
                if len(p.read_text().splitlines()) > 500]
    assert not too_long, too_long
