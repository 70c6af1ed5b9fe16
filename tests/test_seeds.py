"""The seeds table: one result per (teacher seed, fine-tuning seed) from `dvc exp show` rows, mean ±
sample std per Δ; the suite view over seeds: matched adaptation, per-set spreads, pairwise win shares."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from pipeline.stages.seeds import aggregate, collect, markdown, require_seeds, seeds_markdown
from tests.conftest import run


METHODS = ["pretrained", "naive", "infuse"]


def row(seed: object, naive: float, infuse: float, **extra: object) -> dict:
    return {"params.yaml:experiment": "embedded", "params.yaml:finetune.seed": seed, "rev": f"r{seed}",
            "reports/metrics.json:summary.naive.delta_in_domain": naive,
            "reports/metrics.json:summary.naive.delta_ood_image_image": -20.0,
            "reports/metrics.json:summary.naive.delta_ood_image_text": -10.0,
            "reports/metrics.json:summary.infuse.delta_in_domain": infuse,
            "reports/metrics.json:summary.infuse.delta_ood_image_image": -5.0,
            "reports/metrics.json:summary.infuse.delta_ood_image_text": -2.5,
            "reports/metrics.json:summary.pretrained.in_domain": 0.3, **extra}


def test_unprefixed_keys_as_dvc_names_them_when_unambiguous() -> None:
    plain = {k.split(":")[-1]: v for k, v in row(3, 10.0, 9.0).items()}
    assert collect([plain], "embedded", METHODS)[(0, 3)]["methods"]["naive"]["delta_in_domain"] == 10.0
    assert collect([plain], "tiny", METHODS) == {}
    assert collect([plain], "embedded", METHODS + ["lwf"]) == {}  # a row without every method is another suite


def test_newest_row_per_seed_wins_and_other_presets_failures_are_ignored() -> None:
    rows = [row(0, 10.0, 9.0), row(1, 12.0, 9.5), row(1, 99.0, 99.0),  # older duplicate of seed 1
            row(2, 0.0, 0.0, State="Failed"), row(3, 0.0, 0.0, **{"params.yaml:experiment": "tiny"})]
    by_seed = collect(rows, "embedded", METHODS)
    assert sorted(by_seed) == [(0, 0), (0, 1)]
    assert by_seed[(0, 1)]["methods"]["naive"]["delta_in_domain"] == 12.0 and by_seed[(0, 1)]["rev"] == "r1"
    assert "pretrained" not in by_seed[(0, 0)]["methods"]  # only the Δ keys are collected
    teacher = collect([row(0, 1.0, 1.0, **{"params.yaml:seed": 1})], "embedded", METHODS)
    assert list(teacher) == [(1, 0)]  # a teacher seed is a key of its own


def test_aggregate_is_mean_and_sample_std() -> None:
    runs = collect([row(0, 10.0, 9.0), row(1, 12.0, 9.0), row(2, 14.0, 9.0)], "embedded", METHODS)
    table = aggregate([r["methods"] for r in runs.values()])
    assert table["naive"]["delta_in_domain"] == {"mean": 12.0, "std": 2.0, "n": 3}
    assert table["infuse"]["delta_in_domain"]["std"] == 0.0
    text = markdown(table, "seeds 0, 1, 2")
    assert "+12.00 ± 2.00 (n=3)" in text and text.startswith("# seeds 0, 1, 2")
    page = seeds_markdown(table, {"0": table, "1": table}, [0, 1, 2], 0)
    assert page.startswith("# Summary Δs over fine-tuning seeds [0, 1, 2] (teacher seed 0)")
    assert page.count("\n## Teacher seed ") == 2 and page.count("| method |") == 3  # every table has its heading


@pytest.mark.parametrize("bad", [None, "nan", float("nan"), "x"])
def test_unusable_values_are_skipped(bad: object) -> None:
    by_seed = collect([row(0, bad, 9.0)], "embedded", METHODS)  # type: ignore[arg-type]
    assert "delta_in_domain" not in by_seed[(0, 0)]["methods"]["naive"]
    assert not math.isnan(by_seed[(0, 0)]["methods"]["infuse"]["delta_in_domain"])


def test_one_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="needs at least 2 seeds"):
        require_seeds(collect([row(0, 10.0, 9.0)], "embedded", METHODS))
    with pytest.raises(ValueError, match="no results"):
        require_seeds({})
    require_seeds(collect([row(0, 10.0, 9.0), row(1, 12.0, 9.0)], "embedded", METHODS))


def test_seeds_command_leaves_the_committed_table_alone_with_one_seed(project: Path) -> None:
    """The workspace result (seed 0) alone: a clear error, and seeds.json / seeds.md untouched."""
    reports = project / "reports"
    reports.mkdir(exist_ok=True)
    deltas = {"delta_in_domain": 4.0, "delta_ood_image_image": -20.0, "delta_ood_image_text": -6.0}
    summary = {"naive": deltas, "infuse": deltas}
    (reports / "metrics.json").write_text(json.dumps({"summary": summary}))
    for name in ("seeds.json", "seeds.md"):
        (reports / name).write_text("committed table\n")
    proc = run([sys.executable, "-m", "pipeline", "seeds"], project, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error [seeds]: only finetune.seed [0] has results; the table needs at least 2")
    for name in ("seeds.json", "seeds.md"):
        assert (reports / name).read_text() == "committed table\n"


def test_win_shares_count_cells_and_matched_adaptation_reads_the_curve() -> None:
    from pipeline.lib.comparison import matched_adaptation, win_shares

    cells = {"a": {("s", 0): 1.0, ("s", 1): 2.0, ("t", 0): 0.0}, "b": {("s", 0): 0.0, ("s", 1): 3.0, ("t", 0): 0.0}}
    shares = win_shares(cells)
    assert shares["a"]["b"] == pytest.approx(1.5 / 3) and shares["b"]["a"] == pytest.approx(1.5 / 3)
    curve = [{"delta_in_domain": 0.0, "delta_x": 0.0}, {"delta_in_domain": 10.0, "delta_x": -4.0},
             {"delta_in_domain": 20.0, "delta_x": -10.0}]
    assert matched_adaptation({"delta_in_domain": 15.0, "delta_x": -5.0}, curve) == \
        {"x": pytest.approx(-5.0 + 7.0), "beyond_naive_gain": False}  # WiSE-FT at gain 15: -7
    assert matched_adaptation({"delta_in_domain": 25.0, "delta_x": -5.0}, curve)["beyond_naive_gain"] is True


def test_the_report_draws_no_spread_from_a_table_without_this_run(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeds.json collected before the results changed (another world, another λ) is not drawn."""
    from pipeline.stages.seeds import seed_table

    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    now = {"naive": {"delta_in_domain": 4.0}, "infuse": {"delta_in_domain": 3.0}}
    table = {"naive": {"delta_in_domain": {"mean": 4.5, "std": 0.5, "n": 2}}}
    runs = {"0/0": {"rev": "r0", "methods": now}, "0/1": {"rev": "r1", "methods": {"naive": {"delta_in_domain": 5.0}}}}
    (tmp_path / "reports" / "seeds.json").write_text(json.dumps({"experiment": "embedded", "runs": runs,
                                                                 "summary": table}))
    assert seed_table("embedded", ((0, 0), now)) == table
    assert seed_table("embedded", ((0, 1), {"naive": {"delta_in_domain": 5.0}})) == table
    changed = {"naive": {"delta_in_domain": 4.2}, "infuse": {"delta_in_domain": 3.0}}
    assert seed_table("embedded", ((0, 0), changed)) is None
    assert seed_table("embedded", ((0, 2), now)) is None       # a seed the table never saw
    assert seed_table("other", ((0, 0), now)) is None
