"""The one tuning rule (docs/protocol.md#tuning): λ = 0 in every regulariser's grid, edge choices
extended, the best two rerun on three seeds, runs shared by what they were computed from, on
validation only; the committed choices are what the suites configure."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_params, method_config
from pipeline.lib.tuning import Knob, extension, grid, tune
from pipeline.stages import tune as tune_stage
from tests.conftest import ROOT, clone, outdated_stages, run


@pytest.fixture(scope="module")
def compare_params(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tune") / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "experiment=embedded", "suite=compare",
         "--output", str(out)], ROOT)
    return out


def test_every_fine_tuned_method_has_a_grid_and_every_regulariser_grid_holds_zero(compare_params: Path) -> None:
    params = load_params(compare_params)
    trained = {m for m in params.methods if method_config(params, m).kind != "pretrained"}
    assert trained - set(params.tuning) == {"naive_indomain"}   # naive's recipe under another selection rule
    for method, entry in params.tuning.items():
        for key, knob in entry.knobs.items():
            assert len(knob.values) >= 3 and (not key.startswith("lambda_") or 0.0 in knob.values), (method, key)
    assert set(params.tuning["infuse"].knobs) == {"lambda_distill", "lambda_weights"}  # the paper's two knobs
    assert all(method_config(params, m).select_on == "all" for m in trained - {"naive_indomain"})


def test_recipes_set_the_knobs_the_seed_and_the_common_criterion(compare_params: Path) -> None:
    params = load_params(compare_params)
    cfg = tune_stage.recipe(params, "lora", (0.03,), seed=2)
    assert cfg.lr_backbone == 0.03 and cfg.seed == params.finetune.seed + 2 and cfg.lora_rank == 8
    assert tune_stage.recipe(params, "lwf", (0.0,), 0).select_on == "all"
    # λ = 0 of a regulariser is naive's recipe: one run serves both
    naive, lwf_off = tune_stage.recipe(params, "naive", (params.finetune.lr_backbone,), 0), \
        tune_stage.recipe(params, "gram", (0.0,), 0)
    assert tune_stage.recipe_digest(params, naive) == tune_stage.recipe_digest(params, lwf_off)


@pytest.mark.parametrize("values, best, expected", [
    ([0.0, 1.0, 10.0], 10.0, 100.0),       # upper edge: one step beyond
    ([1e-4, 3e-4, 1e-3], 1e-4, 1e-4 / 3.1623),  # lower edge of an LR grid
    ([0.0, 1.0, 10.0], 0.0, 0.1),          # λ = 0 wins: a weaker non-zero λ is tried
    ([0.0, 1.0, 10.0], 1.0, None),         # interior
])
def test_an_edge_choice_extends_one_step_beyond(values, best, expected) -> None:
    step = 3.1623 if values[0] > 0 else 10.0
    out = extension(Knob("k", values, step), best)
    assert (out is None) if expected is None else out[0] == pytest.approx(expected)


def test_the_rule_extends_until_interior_then_chooses_by_the_mean_of_the_best_two_over_seeds() -> None:
    calls = []

    def criterion(point, seed):  # peaks at λ = 1000 (beyond the grid), seed 1 prefers the runner-up
        calls.append((point, seed))
        score = {0.0: 0.1, 1.0: 0.2, 10.0: 0.3, 100.0: 0.4, 1000.0: 0.5, 10000.0: 0.35}[point[0]]
        return score + (0.35 if seed == 1 and point[0] == 100.0 else 0.0)

    out = tune([Knob("lambda_x", [0.0, 1.0, 10.0])], criterion)
    assert [e["value"] for e in out.extensions] == [100.0, 1000.0, 10000.0] and out.stopped.startswith("interior")
    assert set(out.finalists) == {(100.0,), (1000.0,)} and out.chosen == (100.0,)  # by the mean over 3 seeds
    assert len(calls) == len(set(calls)) == out.runs == 6 + 2 * 2  # each (point, seed) once


def test_a_choice_that_wins_on_an_edge_by_the_mean_over_seeds_extends_that_knob_too() -> None:
    def criterion(point, seed):  # seed 0 prefers lr 0.01 (interior); seeds 1 and 2 prefer the lower edge and below
        if seed == 0:
            return {0.00095: 0.3, 0.003: 0.5, 0.01: 0.6, 0.03: 0.1}[point[0]]
        return {0.00095: 0.9, 0.003: 0.8, 0.01: 0.4}[point[0]]

    out = tune([Knob("lr", [0.003, 0.01, 0.03], step=3.1623)], criterion)
    assert [e["value"] for e in out.extensions] == [0.00095] and out.stopped.startswith("interior")
    assert out.chosen == (0.003,) and set(out.finalists) == {(0.003,), (0.01,)}  # 0.00095 lost on seed 0


def test_an_earlier_finalist_stays_in_the_running_when_the_extension_enters_the_best_two() -> None:
    seed0 = {0.00095: 0.55, 0.003: 0.5, 0.01: 0.6, 0.03: 0.1}   # the extension beats 0.003 on seed 0 ...
    later = {0.00095: 0.45, 0.003: 0.8, 0.01: 0.4}              # ... but 0.003 keeps the best mean
    out = tune([Knob("lr", [0.003, 0.01, 0.03], step=3.1623)], lambda p, s: (seed0 if s == 0 else later)[p[0]])
    assert set(out.finalists) == {(0.00095,), (0.003,), (0.01,)} and out.chosen == (0.003,)
    assert out.stopped.startswith("interior") and out.runs == 4 + 3 * 2


def test_an_edge_after_three_extensions_stops_and_says_so() -> None:
    out = tune([Knob("lr", [1.0, 2.0], step=2.0)], lambda p, s: p[0])   # always wants more
    assert len(out.extensions) == 3 and "still on an edge" in out.stopped and out.chosen == (16.0,)


def test_a_two_knob_grid_is_the_product_and_extends_each_knob() -> None:
    out = tune([Knob("a", [0.0, 1.0, 10.0]), Knob("b", [0.0, 5.0])], lambda p, s: -(p[0] - 1.0) ** 2 + p[1])
    assert grid([Knob("a", [0.0, 1.0]), Knob("b", [2.0, 3.0])]) == [(0.0, 2.0), (0.0, 3.0), (1.0, 2.0), (1.0, 3.0)]
    assert {e["key"] for e in out.extensions} == {"b"} and out.chosen[0] == 1.0


@pytest.mark.parametrize("overrides, message", [
    (["+tuning.naive.knobs.lr_bakbone={values:[1,2]}"], "not a numeric fine-tuning key"),
    (["tuning.gram.knobs.lambda_gram.values=[1.0,10.0]"], "holds λ = 0"),
    (["tuning.naive.knobs.lr_backbone.values=[0.001]"], "at least two distinct values"),
    (["+tuning.nobody.knobs.lr_backbone={values:[1,2]}"], "is not a key of methods"),
    (["+tuning.naive.knobs.steps={values:[1,2]}"], "a method may set"),
])
def test_bad_tuning_entries_are_refused_naming_the_key(compare_params: Path, overrides: list[str],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_params(compare_params, [o.lstrip("+") for o in overrides])
    assert str(err.value).startswith("tuning.")


def test_the_committed_choices_are_the_configured_values(compare_params: Path) -> None:
    """reports/tuning.json (written by `tune` on the embedded world) chose what the suites configure."""
    recorded = json.loads((ROOT / "reports" / "tuning.json").read_text())
    assert recorded["experiment"] == "embedded"
    params = load_params(compare_params)
    assert set(recorded["methods"]) <= set(params.tuning)
    not_tuned = [m for m in params.tuning if m not in recorded["methods"]]
    if not_tuned:  # a method without a record is named as such where the choices are shown
        assert f"Not tuned yet (their configured values were not chosen by this rule): {', '.join(not_tuned)}." \
            in (ROOT / "reports" / "tuning.md").read_text()
    for method, rec in recorded["methods"].items():
        assert rec["key"] == list(params.tuning[method].knobs), method
        assert {"grid", "chosen", "extensions", "stopped", "runs", "finalists"} <= set(rec), method
        configured = {k: getattr(method_config(params, method), k) for k in rec["key"]}
        assert configured == pytest.approx(rec["chosen"]), method


@pytest.mark.slow
def test_tune_runs_the_rule_on_validation_and_resumes(reproduced_tiny: Path, tmp_path: Path) -> None:
    project = clone(reproduced_tiny, tmp_path / "tune", share_cache=True)
    first = run([sys.executable, "-m", "pipeline", "tune", "naive"], project)
    record = json.loads((project / "reports" / "tuning.json").read_text())
    naive = record["methods"]["naive"]
    assert record["experiment"] == "tiny" and naive["key"] == ["lr_backbone"]
    assert naive["runs"] == len(naive["scores"]) >= len(naive["grid"]["lr_backbone"]) + 4  # + 2 finalists × 2 seeds
    for result in record["runs"].values():   # the selected checkpoint of a trained model, on validation
        assert result["step"] >= 1 and 0 <= result["criterion"] <= 1
        assert result["criterion"] == pytest.approx((result["val_target"] + result["val_replay"]) / 2, abs=1e-5)
    assert "| naive | lr_backbone |" in (project / "reports" / "tuning.md").read_text()
    assert "choice {'lr_backbone':" in first.stdout
    assert not list((project / "data" / ".resume").glob("tune/**/*.pt"))   # finished runs leave no resume state
    again = run([sys.executable, "-m", "pipeline", "tune", "naive"], project)
    assert json.loads((project / "reports" / "tuning.json").read_text()) == record  # nothing trained twice
    assert set(outdated_stages(project)) == {"report"}   # tuning writes no pipeline output: only the report is stale


def test_tune_refuses_a_method_without_a_grid(tmp_path: Path) -> None:
    out = run([sys.executable, "-m", "pipeline", "tune", "pretrained"], ROOT, check=False)
    assert out.returncode == 1 and "no tuning grid for ['pretrained']" in out.stderr
