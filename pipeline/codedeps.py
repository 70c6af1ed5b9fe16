"""Which source files a stage runs: the import closure of its module inside the `pipeline` package.

`python -m pipeline <stage>` executes `pipeline/__init__.py`, `pipeline/__main__.py`, the CLI, the
stage's module (`pipeline.commands.COMMANDS[stage]`) and everything they import from `pipeline`, at module level
or inside a function (lazy imports count: they run when the stage does). Imports are read
statically with `ast`, so the closure is what the source says, not what one run happened to touch.
A module's package `__init__.py` files count too, since importing `a.b.c` runs `a` and `a.b` first.
Files other than Python sources inside the package folders of the closure count as well: a module
may read them (package data).

This is the one source of each stage's code dependencies in dvc.yaml (`python -m pipeline dag`).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "pipeline"
ENTRY_MODULES = ("pipeline.__main__", "pipeline.cli")  # what `python -m pipeline` runs before the stage


def module_file(module: str, root: Path) -> Path | None:
    """The source file of a dotted module name under `root`, or None when it is not a module of ours."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _package_of(module: str, path: Path) -> str:
    """The package that relative imports in `module` are resolved against."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement anywhere in the file may load (candidates: `from a import
    b` names both `a` and `a.b`, which is a module only if its file exists)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(module, path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _with_parents(module: str) -> list[str]:
    """`a.b.c` → [a, a.b, a.b.c]: importing a module runs its packages first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(modules: list[str], root: Path | str = ".") -> list[str]:
    """Files (posix, relative to `root`) of `modules` and everything they import from the package."""
    root = Path(root)
    seen: dict[str, Path] = {}
    checked: set[str] = set()
    todo = [m for name in modules for m in _with_parents(name)]
    while todo:
        module = todo.pop()
        if module in checked:
            continue
        checked.add(module)
        path = module_file(module, root)
        if path is not None:
            seen[module] = path
            todo.extend(m for name in imported_names(path, module) for m in _with_parents(name))
    files = {p.relative_to(root).as_posix() for p in seen.values()}
    files |= _package_data({p.parent for p in seen.values()}, root)
    return sorted(files)


def _package_data(folders: set[Path], root: Path) -> set[str]:
    """Non-Python files that sit next to the closure's modules (not caches, not hidden files)."""
    return {f.relative_to(root).as_posix() for folder in folders for f in folder.iterdir()
            if f.is_file() and f.suffix not in (".py", ".pyc") and not f.name.startswith(".")}


def stage_module(stage: str) -> str:
    """The module `python -m pipeline <stage>` runs (the command registry)."""
    from pipeline.commands import COMMANDS

    if stage not in COMMANDS:
        raise ValueError(f"unknown stage '{stage}': the CLI has {sorted(COMMANDS)}")
    return COMMANDS[stage].module


def stage_code_deps(stage: str, root: Path | str = ".") -> list[str]:
    """The source files `python -m pipeline <stage>` may execute."""
    return import_closure([*ENTRY_MODULES, stage_module(stage)], root)
