"""Stage `fingerprint`: what every dataset's files are, one small file per dataset that `prepare`
depends on (pipeline.sources.fingerprint).

DVC runs it on every `dvc repro` (`always_changed`); a file is rewritten only when its dataset's
files changed, so only that dataset's `prepare` (and what follows from its manifest) reruns. The
Snakefile runs the same command when it is read. It reads `datasets` from params.yaml as written
(no validation: `prepare` validates and names what is wrong) and starts without polars or torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from pipeline import paths
from pipeline.sources.fingerprint import Fingerprint, fingerprint, write_if_changed


def read_datasets(params_file: str | Path) -> dict[str, Any]:
    path = Path(params_file)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path} (run from the project root)")
    with path.open(encoding="utf-8") as f:
        params = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    return params.get("datasets") or {}


def read_previous(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def describe(name: str, found: Fingerprint, changed: bool) -> str:
    """One line per dataset that has files: what was found, and whether its `prepare` will rerun."""
    if found.absent:
        return (f"[fingerprint] {name}: {', '.join(map(str, found.absent))} not found: kept the fingerprint of "
                f"the files prepare@{name} last read (it is not rerun; without its files it could only fail)")
    parts = []
    for label, entry in found.doc["inputs"].items():
        if entry.get("exists", True):
            missing = f", {entry['missing']} missing" if entry.get("missing") else ""
            parts.append(f"{label} {_files(entry['files'])} ({entry['bytes'] / 1e6:.1f} MB{missing})")
        else:
            parts.append(f"{label} {entry['path']} not found")
    state = f"changed: prepare@{name} reruns" if changed else "unchanged"
    read = f" ({_files(found.read)} read)" if found.read else ""
    return f"[fingerprint] {name}: {', '.join(parts)}; {state}{read}"


def main(args: argparse.Namespace) -> None:
    datasets = read_datasets(args.params)
    for name, cfg in datasets.items():
        dest = paths.fingerprint(name)
        found = fingerprint(name, cfg or {}, paths.file_stats(name), read_previous(dest))
        changed = write_if_changed(dest, json.dumps(found.doc, indent=1, sort_keys=True) + "\n")
        if found.doc["inputs"]:
            print(describe(name, found, changed))
    for stale in paths.fingerprints().glob("*.json"):  # datasets no longer in params.yaml
        if stale.stem not in datasets:
            stale.unlink()
