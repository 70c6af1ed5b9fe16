"""The architecture holds: small files and functions, a library that knows nothing of the config, the CLI,
the stages or stage I/O, declarations that load no torch, light stages that start without a model."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.codedeps import imported_names
from pipeline.commands import COMMANDS
from tests.conftest import ROOT

PACKAGE = ROOT / "pipeline"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
FORBIDDEN_IN_LIB = ("pipeline.config", "pipeline.cli", "pipeline.commands", "pipeline.stages", "pipeline.io",
                    "pipeline.sources")
LIGHT_COMMANDS = ("index", "evaluate", "neighbours", "report", "seeds", "configure", "dag")


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def test_no_file_over_400_lines_and_no_function_over_60() -> None:
    long_files = [f"{p.relative_to(ROOT)}: {n}" for p in sources() if (n := p.read_text().count("\n")) > MAX_FILE_LINES]
    long_functions = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1 + len(node.decorator_list)
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert long_files == [] and long_functions == []


def test_the_library_imports_no_config_cli_stage_or_stage_io() -> None:
    offending = []
    for path in sorted((PACKAGE / "lib").rglob("*.py")):
        for name in imported_names(path, module_name(path)):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_LIB):
                offending.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offending == []


def loaded_modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_loading_params_imports_neither_torch_nor_pil() -> None:
    loaded = loaded_modules("from pipeline.config import load_params; load_params('params.yaml')")
    assert not {"torch", "PIL", "open_clip"} & loaded


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_commands_that_run_no_model_start_without_torch(command: str) -> None:
    loaded = loaded_modules(f"import pipeline.cli, {COMMANDS[command].module}")
    assert not {"torch", "open_clip"} & loaded, command
