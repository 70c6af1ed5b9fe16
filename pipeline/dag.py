"""The pipeline DAG as DVC resolves it from dvc.yaml: the one source the Snakefile builds from.

DVC's own parser expands `foreach` and `${...}` against params.yaml, so Snakemake runs exactly
the stages, commands, inputs, outputs and params that `dvc repro` runs. A dependency on a parent
folder of other stages' outputs (`data/prepared`) becomes those outputs, which is how DVC itself
links such stages.
"""
from __future__ import annotations

import json
import re
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
    # DVC runs it on every repro (`always_changed`); the Snakefile runs it when it is read
    # (`refresh`), so its rule takes no inputs and no params: it must not rerun on its own
    always_changed: bool = False

    @property
    def rule(self) -> str:
        """Snakemake rule name (identifiers only): finetune@infuse → finetune__infuse."""
        return self.name.replace("@", "__").replace("-", "_")

    @property
    def kind(self) -> str:
        """The CLI stage it runs (`python -m pipeline finetune infuse` → finetune)."""
        match = PIPELINE_CMD.match(self.cmd)
        return match.group(1) if match else self.name.split("@")[0]


@dataclass
class Job:
    """What a Snakemake rule asks the scheduler for."""
    threads: int
    resources: dict[str, Any]
    local: bool


def job_for(spec: StageSpec, params: Any, cluster: dict[str, Any]) -> Job:
    """Threads, memory, wall time and GPUs of a stage's rule from `resources.<stage>` in params.yaml;
    the SLURM partition from the Snakemake config (`slurm_gpu_partition` for stages that take a GPU,
    `slurm_cpu_partition` for the others; none when not given)."""
    if spec.kind not in params.resources:
        raise ValueError(f"resources.{spec.kind}: missing in params.yaml (stage {spec.name}): add it to "
                         f"conf/resources/default.yaml and run `python -m pipeline configure`")
    res = params.resources[spec.kind]
    gpu, threads, mem_mb = res.gpu, res.threads, res.mem_mb
    processes = params.runtime.processes
    if spec.kind == "finetune" and processes > 1:
        # torchrun starts one process per GPU, each with the threads, workers and memory of one job
        gpu, threads, mem_mb = max(gpu, processes) if gpu else 0, threads * processes, mem_mb * processes
    resources: dict[str, Any] = {"mem_mb": mem_mb, "runtime": res.runtime_min, "gpu": gpu}
    partition = cluster.get("slurm_gpu_partition" if gpu else "slurm_cpu_partition")
    if partition:
        resources["slurm_partition"] = partition
    return Job(threads, resources, res.local)


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
            specs.append(StageSpec(st.name, st.cmd, deps, [str(o.def_path) for o in st.outs], params,
                                   bool(st.always_changed)))
    _split_folder_outputs(specs)
    all_outs = [o for s in specs for o in s.outs]
    for spec in specs:
        spec.deps = _expand(spec.deps, all_outs)
    return specs


def _split_folder_outputs(specs: list[StageSpec]) -> None:
    """A dep on a file inside another stage's output folder (data/fingerprints/<name>.json) makes that
    file the output, in place of the folder, so each consumer waits for and reruns on its own file
    (Snakemake dates a folder by the folder, not by the file inside it). DVC links them the same way."""
    for producer in specs:
        for folder in [o for o in producer.outs if is_directory(o)]:
            inside = sorted({d for s in specs for d in s.deps if d.startswith(folder.rstrip("/") + "/")})
            if inside:
                at = producer.outs.index(folder)
                producer.outs[at:at + 1] = inside


def refresh(specs: list[StageSpec]) -> None:
    """Run the stages DVC runs on every repro (the datasets' fingerprints) now, before Snakemake
    dates any file: their outputs change only when what they describe did."""
    import subprocess
    import sys

    for spec in specs:
        if spec.always_changed:
            done = subprocess.run(spec.cmd, shell=True, capture_output=True, text=True)
            print(done.stdout, end="", file=sys.stderr)  # stdout may be a graph (`--rulegraph | dot`)
            if done.returncode != 0:
                raise RuntimeError(f"{spec.cmd} failed ({done.returncode}): {done.stderr.strip()}")


def rule_inputs(spec: StageSpec) -> list[str]:
    """What a Snakemake rule waits for: the stage's deps, or none for a stage `refresh` runs."""
    return [] if spec.always_changed else spec.deps


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
    """The stage's params as one JSON string: Snakemake reruns a rule when it changes (never the
    rule of a stage `refresh` runs)."""
    return "" if spec.always_changed else json.dumps(spec.params, sort_keys=True, default=str)


# ------------------------------------------------------------------ code deps: derived, not hand-written
DVC_YAML = Path("dvc.yaml")
# every file of stages: the pipeline, and the fingerprint stage DVC runs on every repro (its own small lock)
DVC_FILES = (DVC_YAML, Path("fingerprint") / "dvc.yaml")
CODE_PREFIX = "pipeline/"
PIPELINE_CMD = re.compile(r"^python -m pipeline (\w+)")


def _round_trip_yaml():
    """A YAML reader/writer that keeps dvc.yaml's comments, order and layout."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def _is_code(dep: Any) -> bool:
    return isinstance(dep, str) and dep.startswith(CODE_PREFIX)


def sync_code_deps(path: Path = DVC_YAML, root: Path | str = ".", write: bool = False) -> dict[str, tuple[list[str], list[str]]]:
    """Compare (and with `write`, replace) each pipeline stage's `pipeline/...` deps in dvc.yaml with the
    import closure of the stage's module; data and params deps, comments and order stay as they are.
    Returns stage → (missing from dvc.yaml, listed but not imported) for the stages that differ."""
    from pipeline.codedeps import stage_code_deps

    yaml = _round_trip_yaml()
    doc = yaml.load(path.read_text())
    differences: dict[str, tuple[list[str], list[str]]] = {}
    for name, stage in (doc.get("stages") or {}).items():
        body = stage.get("do", stage)  # foreach stages keep their definition under `do`
        match = PIPELINE_CMD.match(str(body.get("cmd", "")))
        if match is None:
            continue  # not one of our stages: its deps are its author's business
        deps = body.get("deps") or []
        listed = [d for d in deps if _is_code(d)]
        wanted = stage_code_deps(match.group(1), root)
        if listed == wanted:
            continue
        differences[name] = (sorted(set(wanted) - set(listed)), sorted(set(listed) - set(wanted)))
        others = [d for d in deps if not _is_code(d)]
        if "deps" not in body:
            body["deps"] = []
        body["deps"][:] = [*wanted, *others]
    if write and differences:
        from pipeline import io as pio

        with pio.atomic_path(path) as tmp, tmp.open("w") as out:
            yaml.dump(doc, out)
    return differences


def describe(differences: dict[str, tuple[list[str], list[str]]]) -> str:
    lines = []
    for stage, (missing, extra) in differences.items():
        lines += [f"{stage}: + {f}" for f in missing] + [f"{stage}: - {f}" for f in extra]
        if not missing and not extra:
            lines.append(f"{stage}: same files, another order")
    return "\n".join(lines)


def affected_stages(source: str, root: Path | str = ".") -> list[str]:
    """The stages (DVC addresses) whose code deps contain `source`: what editing it reruns first."""
    from pipeline.codedeps import stage_code_deps

    return [s.name for s in load_stages(root) if source in stage_code_deps(s.kind, root)]


def main(args) -> None:
    """`python -m pipeline dag [--check | --write | --affected FILE]`: dvc.yaml's code deps against the
    import closure, or the stages an edit of FILE reruns."""
    if args.affected:
        print("\n".join(affected_stages(Path(args.affected).as_posix())) or f"[dag] no stage imports {args.affected}")
        return
    found = {path: sync_code_deps(path, ".", write=args.write) for path in DVC_FILES}
    differences = {stage: diff for per_file in found.values() for stage, diff in per_file.items()}
    names = " and ".join(map(str, DVC_FILES))
    if not differences:
        print(f"[dag] {names}: every stage's code deps are its import closure")
        return
    print(describe(differences))
    if args.write:
        for path, per_file in found.items():
            if per_file:
                print(f"[dag] rewrote the code deps of {len(per_file)} stage(s) in {path}")
    elif args.check:
        raise RuntimeError(f"{names}: code deps of {len(differences)} stage(s) differ from their import closure "
                           f"(listed above): run `python -m pipeline dag --write`")
