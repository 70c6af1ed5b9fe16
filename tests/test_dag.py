"""One DAG: `dvc dag` and Snakemake's rule graph have the same stages and edges."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from pipeline import paths
from pipeline.dag import edges, load_stages
from pipeline import paths
from tests.conftest import run


def dvc_edges(project: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Stage names and edges of `dvc dag` (a stage of another dvc.yaml is shown as <file>:<name>)."""
    dot = run([str(Path(sys.executable).parent / "dvc"), "dag", "--dot"], project).stdout
    name = r'[\w@./:-]+'
    nodes = set(re.findall(rf'^\s*"?({name})"?\s*;?\s*$', dot, re.M)) | set(re.findall(rf'"({name})"', dot))
    pairs = set(re.findall(rf'"?({name})"?\s*->\s*"?({name})"?', dot))
    stage = lambda address: address.rsplit(":", 1)[-1]  # noqa: E731
    return ({stage(n) for n in nodes if n not in ("digraph", "strict")},
            {(stage(a), stage(b)) for a, b in pairs})


def snakemake_edges(project: Path) -> tuple[set[str], set[tuple[str, str]]]:
    out = run([str(Path(sys.executable).parent / "snakemake"), "--rulegraph", "--cores", "1", "--forceall"],
              project).stdout
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', out, re.M))
    pairs = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", out, re.M)}
    return set(labels.values()) - {"all"}, {(a, b) for a, b in pairs if "all" not in (a, b)}


def test_dvc_and_snakemake_have_the_same_dag(project: Path) -> None:
    dvc_nodes, dvc_pairs = dvc_edges(project)
    sm_nodes, sm_pairs = snakemake_edges(project)
    to_rule = lambda name: name.replace("@", "__")  # noqa: E731
    assert {to_rule(n) for n in dvc_nodes} == sm_nodes
    assert {(to_rule(a), to_rule(b)) for a, b in dvc_pairs} == sm_pairs
    assert len(sm_pairs) > 20  # the real pipeline, not an empty graph


def test_resolved_stages_match_the_artifact_layout(project: Path) -> None:
    """dvc.yaml's outputs are where the stages write (pipeline/paths.py)."""
    specs = {s.name: s for s in load_stages(project)}
    assert str(paths.teacher()) in specs["teacher"].outs
    assert str(paths.features()) in specs["features"].outs
    for method in ("pretrained", "naive", "infuse"):
        assert str(paths.run(method)) in specs[f"finetune@{method}"].outs
        assert str(paths.embeddings(method)) in specs[f"embed@{method}"].outs
        assert str(paths.index(method)) in specs[f"index@{method}"].outs
        assert str(paths.evaluation(method)) in specs[f"evaluate@{method}"].outs
    assert str(paths.neighbours()) in specs["neighbours"].outs and str(paths.neighbours()) in specs["report"].deps
    assert str(paths.report_html()) in specs["report"].outs
    assert ("teacher", "features") in edges(list(specs.values()))
    assert not any(s.name.startswith("teacher") for s in specs.values() if "data/prepared/flags" in s.deps
                   and s.name == "teacher"), "the teacher must not depend on the target domain"
