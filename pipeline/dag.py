"""The pipeline DAG as DVC resolves it from dvc.yaml: the one source the Snakefile builds from.

DVC's own parser expands `foreach` and `${...}` against params.yaml, so Snakemake runs exactly
the stages, commands, inputs, outputs and params that `dvc repro` runs. A dependency on a parent
folder of other stages' outputs (`data/prepared`) becomes those outputs, which is how DVC itself
links such stages.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

FILE_SUFFIXES = {".json", ".md", ".html", ".png", ".parquet", ".pt", ".faiss", ".csv", ".tsv", ".yaml"}


@dataclass
class StageSpec:
    name: str                     # DVC address, e.g. "finetune@infuse"
    cmd: str
    deps: list[str]
    outs: list[str]
    params: dict[str, Any] = field(default_factory=dict)  # dotted key → current value

    @property
    def rule(self) -> str:
        """Snakemake rule name (identifiers only): finetune@infuse → finetune__infuse."""
        return self.name.replace("@", "__").replace("-", "_")


def is_directory(path: str) -> bool:
    """Outputs without a file suffix are folders (the convention dvc.yaml follows)."""
    return PurePosixPath(path).suffix not in FILE_SUFFIXES


def _lookup(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def load_stages(root: str | Path = ".") -> list[StageSpec]:
    """Resolved stages of dvc.yaml (DVC's parser), with folder deps mapped onto producing outputs."""
    import yaml
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = Path(root)
    params_tree = yaml.safe_load((root / "params.yaml").read_text())
    with Repo(str(root)) as repo:
        raw = [s for s in repo.index.stages if s.cmd]
        specs = []
        for st in raw:
            deps, params = [], {}
            for dep in st.deps:
                if isinstance(dep, ParamsDependency):
                    params.update({k: _lookup(params_tree, k) for k in dep.params})
                else:
                    deps.append(str(dep.def_path))
            specs.append(StageSpec(st.name, st.cmd, deps, [str(o.def_path) for o in st.outs], params))
    all_outs = [o for s in specs for o in s.outs]
    for spec in specs:
        spec.deps = _expand(spec.deps, all_outs)
    return specs


def _expand(deps: list[str], outs: list[str]) -> list[str]:
    """Map each dep onto the outputs that produce it: itself, the outputs inside it, or the output
    folder that contains it."""
    result: list[str] = []
    for dep in deps:
        inside = [o for o in outs if o.startswith(dep.rstrip("/") + "/")]
        container = [o for o in outs if dep.startswith(o.rstrip("/") + "/")]
        for path in (inside if dep not in outs and inside else container or [dep]):
            if path not in result:
                result.append(path)
    return result


def edges(specs: list[StageSpec]) -> set[tuple[str, str]]:
    """(producer, consumer) stage pairs."""
    producer = {o: s.name for s in specs for o in s.outs}
    return {(producer[d], s.name) for s in specs for d in s.deps if d in producer}


def params_signature(spec: StageSpec) -> str:
    """The stage's params as one JSON string: Snakemake reruns a rule when it changes."""
    return json.dumps(spec.params, sort_keys=True, default=str)
