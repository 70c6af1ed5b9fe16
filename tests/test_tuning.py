"""Equal tuning budgets: one knob per method, a grid, the choice made on validation only."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_params, method_config
from pipeline.stages import tune
from tests.conftest import ROOT, run


@pytest.fixture(scope="module")
def compare_params(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tune") / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "experiment=embedded", "suite=compare",
         "--output", str(out)], ROOT)
    return out


def test_every_fine_tuned_method_of_the_compare_suite_has_a_three_value_grid(compare_params: Path) -> None:
    params = load_params(compare_params)
    tuned = set(params.tuning)
    trained = {m for m in params.methods if method_config(params, m).kind != "pretrained"}
    assert trained - tuned == {"naive_indomain"}   # naive's recipe under another selection rule
    assert all(len(entry.grid) == 3 for entry in params.tuning.values())
    assert all(method_config(params, m).select_on == "all" for m in trained - {"naive_indomain"})


def test_grid_configs_set_the_knob_and_select_on_the_common_criterion(compare_params: Path) -> None:
    params = load_params(compare_params)
    for value, cfg in tune.grid_configs(params, "lora"):
        assert cfg.lr_backbone == value and cfg.select_on == "all" and cfg.lora_rank == 8
    values = [cfg.lambda_ewc for _, cfg in tune.grid_configs(params, "ewc")]
    assert values == params.tuning["ewc"].grid


def test_choice_is_the_best_criterion_first_listed_on_ties() -> None:
    assert tune.choose({"1": {"criterion": 0.2}, "10": {"criterion": 0.5}, "100": {"criterion": 0.4}}) == "10"
    assert tune.choose({"1": {"criterion": 0.5}, "10": {"criterion": 0.5}}) == "1"


@pytest.mark.parametrize("overrides, message", [
    (["tuning.naive.key=lr_bakbone"], "not a numeric fine-tuning key"),
    (["tuning.naive.grid=[0.1,0.2]"], "is not one of the grid"),
    (["tuning.naive.grid=[0.001]"], "at least two distinct values"),
    (["tuning.nobody.key=lr_backbone", "tuning.nobody.grid=[1,2]"], "is not a key of methods"),
])
def test_bad_tuning_entries_are_refused_naming_the_key(compare_params: Path, overrides: list[str],
                                                       message: str) -> None:
    entry = ".".join(overrides[0].split("=")[0].split(".")[:2])       # tuning.<method>
    with pytest.raises(ConfigError, match=message) as err:
        load_params(compare_params, overrides)
    assert str(err.value).startswith(entry)


def test_the_committed_choices_are_the_configured_values(compare_params: Path) -> None:
    """reports/tuning.json (written by `tune` on the embedded world) chose what the suites configure."""
    recorded = json.loads((ROOT / "reports" / "tuning.json").read_text())
    assert recorded["experiment"] == "embedded"
    params = load_params(compare_params)
    assert set(recorded["methods"]) == set(params.tuning), "run `python -m pipeline tune` for every method"
    for method, rec in recorded["methods"].items():
        entry = params.tuning[method]
        assert rec["key"] == entry.key and rec["grid"] == [f"{v:g}" for v in entry.grid], method
        assert set(rec["results"]) == set(rec["grid"]), method
        assert rec["choice"] == tune.choose(rec["results"]), method
        assert rec["choice"] == f"{getattr(method_config(params, method), entry.key):g}", method
