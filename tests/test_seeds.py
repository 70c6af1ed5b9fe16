"""The seeds table: one result per seed from `dvc exp show` rows, mean ± sample std per Δ."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from pipeline.stages.seeds import aggregate, collect, markdown, require_seeds
from tests.conftest import run


def row(seed: object, naive: float, infuse: float, **extra: object) -> dict:
    return {"params.yaml:experiment": "embedded", "params.yaml:finetune.seed": seed,
            "reports/metrics.json:summary.naive.delta_in_domain": naive,
            "reports/metrics.json:summary.naive.delta_ood_image_image": -20.0,
            "reports/metrics.json:summary.naive.delta_ood_image_text": -10.0,
            "reports/metrics.json:summary.infuse.delta_in_domain": infuse,
            "reports/metrics.json:summary.infuse.delta_ood_image_image": -5.0,
            "reports/metrics.json:summary.infuse.delta_ood_image_text": -2.5,
            "reports/metrics.json:summary.pretrained.in_domain": 0.3, **extra}


def test_unprefixed_keys_as_dvc_names_them_when_unambiguous() -> None:
    plain = {k.split(":")[-1]: v for k, v in row(3, 10.0, 9.0).items()}
    assert collect([plain], "embedded")[3]["naive"]["delta_in_domain"] == 10.0
    assert collect([plain], "tiny") == {}


def test_newest_row_per_seed_wins_and_other_presets_failures_are_ignored() -> None:
    rows = [row(0, 10.0, 9.0), row(1, 12.0, 9.5), row(1, 99.0, 99.0),  # older duplicate of seed 1
            row(2, 0.0, 0.0, State="Failed"), row(3, 0.0, 0.0, **{"params.yaml:experiment": "tiny"})]
    by_seed = collect(rows, "embedded")
    assert sorted(by_seed) == [0, 1]
    assert by_seed[1]["naive"]["delta_in_domain"] == 12.0
    assert "pretrained" not in by_seed[0]  # only the Δ keys are collected


def test_aggregate_is_mean_and_sample_std() -> None:
    table = aggregate(collect([row(0, 10.0, 9.0), row(1, 12.0, 9.0), row(2, 14.0, 9.0)], "embedded"))
    assert table["naive"]["delta_in_domain"] == {"mean": 12.0, "std": 2.0, "n": 3}
    assert table["infuse"]["delta_in_domain"]["std"] == 0.0
    text = markdown(table, [0, 1, 2])
    assert "+12.00 ± 2.00 (n=3)" in text
    assert "infuse keeps 75 % of naive's in-domain gain" in text
    assert "infuse also loses: OOD image-image 25 %" in text


@pytest.mark.parametrize("bad", [None, "nan", float("nan"), "x"])
def test_unusable_values_are_skipped(bad: object) -> None:
    by_seed = collect([row(0, bad, 9.0)], "embedded")  # type: ignore[arg-type]
    assert "delta_in_domain" not in by_seed[0]["naive"]
    assert not math.isnan(by_seed[0]["infuse"]["delta_in_domain"])


def test_one_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="needs at least 2 seeds"):
        require_seeds(collect([row(0, 10.0, 9.0)], "embedded"))
    with pytest.raises(ValueError, match="no results"):
        require_seeds({})
    require_seeds(collect([row(0, 10.0, 9.0), row(1, 12.0, 9.0)], "embedded"))


def test_seeds_command_leaves_the_committed_table_alone_with_one_seed(project: Path) -> None:
    """The workspace result (seed 0) alone: a clear error, and seeds.json / seeds.md untouched."""
    reports = project / "reports"
    reports.mkdir(exist_ok=True)
    summary = {"naive": {"delta_in_domain": 4.0, "delta_ood_image_image": -20.0, "delta_ood_image_text": -6.0}}
    (reports / "metrics.json").write_text(json.dumps({"summary": summary}))
    for name in ("seeds.json", "seeds.md"):
        (reports / name).write_text("committed table\n")
    proc = run([sys.executable, "-m", "pipeline", "seeds"], project, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error [seeds]: only finetune.seed [0] has results; the table needs at least 2")
    for name in ("seeds.json", "seeds.md"):
        assert (reports / name).read_text() == "committed table\n"
