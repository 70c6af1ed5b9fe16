"""Equal tuning budgets: one knob per method, a grid, the choice made on validation only."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_params, method_config
from pipeline.stages import tune
from tests.conftest import ROOT, clone, run


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


@pytest.mark.slow
def test_tune_records_every_value_chooses_on_validation_and_resumes(reproduced_tiny: Path, tmp_path: Path) -> None:
    project = clone(reproduced_tiny, tmp_path / "tune", share_cache=True)
    first = run([sys.executable, "-m", "pipeline", "tune", "naive"], project)
    record = json.loads((project / "reports" / "tuning.json").read_text())
    naive = record["methods"]["naive"]
    assert record["experiment"] == "tiny" and naive["key"] == "lr_backbone"
    assert set(naive["results"]) == set(naive["grid"]) == {"0.0003", "0.001", "0.003"}
    assert naive["choice"] == tune.choose(naive["results"])
    for result in naive["results"].values():   # the selected checkpoint of a trained model, on validation
        assert result["step"] >= 1 and 0 <= result["criterion"] <= 1
        assert result["criterion"] == pytest.approx((result["val_target"] + result["val_replay"]) / 2, abs=1e-5)
    assert "| naive | `lr_backbone` |" in (project / "reports" / "tuning.md").read_text()
    assert "choice lr_backbone=" in first.stdout
    assert not list((project / "data" / ".resume").glob("tune/**/*.pt"))   # finished runs leave no resume state
    again = run([sys.executable, "-m", "pipeline", "tune", "naive"], project)
    assert again.stdout.count(": recorded, criterion") == 3       # nothing is trained twice
    # tuning writes no pipeline output: only the report, which states the grid, is out of date
    status = run([str(Path(sys.executable).parent / "dvc"), "status", "--json"], project).stdout
    assert set(json.loads(status)) == {"report"}


def test_tune_refuses_a_method_without_a_grid(tmp_path: Path) -> None:
    out = run([sys.executable, "-m", "pipeline", "tune", "pretrained"], ROOT, check=False)
    assert out.returncode == 1 and "no tuning grid for ['pretrained']" in out.stderr
