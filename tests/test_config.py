"""params.yaml schema: presets compose to valid configs, bad keys/values fail naming the key."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_params, method_config
from tests.conftest import ROOT, run


def test_committed_params_is_the_embedded_preset(tmp_path: Path) -> None:
    """params.yaml is generated: composing the default preset must reproduce it byte for byte."""
    out = tmp_path / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "--output", str(out)], ROOT)
    assert out.read_text() == (ROOT / "params.yaml").read_text(), "params.yaml is stale: run `python -m pipeline configure`"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_preset_composes_to_a_valid_config(preset: str, tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", f"experiment={preset}", "--output", str(out)], ROOT)
    params = load_params(out)
    assert params.experiment == preset
    for method in params.methods:
        method_config(params, method)


def test_compare_suite_adds_every_retention_method(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    run([sys.executable, "-m", "pipeline", "configure", "suite=compare", "--output", str(out)], ROOT)
    params = load_params(out)
    assert {"pretrained", "naive", "infuse", "infuse_distill", "infuse_weights", "infuse_online", "lp_ft", "lwf",
            "gram", "ewc"} <= set(params.methods)
    assert method_config(params, "ewc").lambda_ewc > 0 and method_config(params, "lp_ft").lp_max_steps > 0
    assert params.experiment == "embedded"  # a suite adds methods; the preset stays what it was


@pytest.mark.parametrize("override, key", [
    ("finetune.lr_headx=1", "finetune.lr_headx"),
    ("finetune.steps=-1", "finetune.steps"),
    ("finetune.steps=abc", "finetune.steps"),
    ("finetune.select_on=best", "finetune.select_on"),
    ("runtime.device=tpu", "runtime.device"),
    ("roles.target=nope", "roles.target"),
    ("datasets.flags.val_class_fraction=1.5", "datasets.flags.val_class_fraction"),
    ("methods.infuse.lambda_distil=3", "methods.infuse.lambda_distil"),
    ("methods.infuse.lambda_distill=-3", "methods.infuse.lambda_distill"),
    ("methods.infuse.lambda_ewc=-1", "methods.infuse.lambda_ewc"),
    ("methods.infuse.lwf_temperature=0", "methods.infuse.lwf_temperature"),
    ("finetune.lp_max_steps=-2", "finetune.lp_max_steps"),
    ("finetune.validations=2", "finetune.validations"),
    ("finetune.steps=0", "finetune.steps"),
    ("finetune.schedule=target_only", "finetune.schedule"),
    ("methods.infuse.schedule=round_robin", "methods.infuse.schedule"),  # the suite's, not a method's
    ("methods.infuse.steps=10", "methods.infuse.steps"),
    ("eval.k=7", "eval.k"),                                              # not one of eval.ks
    ("features.dtype=float64", "features.dtype"),
    ("methods.gift.lambda_awc=1", "methods.gift.lambda_awc"),
    ("wise_ft.base=nope", "wise_ft.base"),
    ("wise_ft.base=pretrained", "wise_ft.base"),
    ("wise_ft.alphas=[0.5,1.5]", "wise_ft.alphas"),
    ("qualitative.methods=[pretrained,nope]", "qualitative.methods"),
    ("fewshot.shots=[0,2]", "fewshot.shots"),
    ("fewshot.methods=[coop]", "fewshot.methods"),
    ("fewshot.settings.stepz=3", "fewshot.settings.stepz"),
])
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_params(ROOT / "params.yaml", overrides=[override])


def test_method_overrides_apply_on_top_of_finetune() -> None:
    params = load_params(ROOT / "params.yaml")
    infuse = method_config(params, "infuse")
    assert infuse.lambda_distill > 0 and infuse.steps == params.finetune.steps
    assert method_config(params, "naive").lambda_distill == 0
    with pytest.raises(ConfigError, match="unknown method"):
        method_config(params, "nope")


def test_configure_refuses_a_bad_override_and_keeps_the_file(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    out.write_text("sentinel\n")
    proc = run([sys.executable, "-m", "pipeline", "configure", "finetune.steps=-5", "--output", str(out)], ROOT,
               check=False)
    assert proc.returncode != 0 and "finetune.steps" in proc.stderr
    assert out.read_text() == "sentinel\n"


@pytest.mark.parametrize("override, hint", [
    ("finetune.stpes=3", "did you mean finetune.steps?"),
    ("runtim.threads=1", "did you mean runtime?"),
    ("datasets.glyphs.n_clases=3", "did you mean datasets.glyphs.n_classes?"),
    ("methods.infuse.lambda_distil=3", "did you mean methods.infuse.lambda_distill?"),
    ("fewshot.settings.stepz=3", "did you mean fewshot.settings.steps?"),
])
def test_a_misspelt_key_says_what_it_could_have_meant(override: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_params(ROOT / "params.yaml", overrides=[override])


def test_a_misspelt_key_in_params_yaml_says_what_it_could_have_meant(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text().replace("\n  lr_backbone:", "\n  lr_bakcbone:"))
    with pytest.raises(ConfigError, match=re.escape("finetune.lr_bakcbone: unknown key, did you mean "
                                                    "finetune.lr_backbone?")):
        load_params(params)


@pytest.mark.parametrize("override, says", [
    ("finetune.stpes=3", "finetune.stpes: unknown key, did you mean finetune.steps?"),
    ("datasets.flgas.n_classes=3", "datasets.flgas: unknown key, did you mean datasets.flags?"),
    ("experiment=tiyn", "experiment=tiyn: no such preset in conf/experiment, did you mean experiment=tiny?"),
    ("finetune.steps=abc", "finetune.steps: Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_configure_errors_name_the_key_not_hydra_syntax_or_temporary_files(override: str, says: str,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    proc = run([sys.executable, "-m", "pipeline", "configure", override, "--output", str(out)], ROOT, check=False)
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip() == f"error [configure]: {says}"  # one line, no "+key" hint, no temporary path


def test_configure_keeps_the_previous_overrides_until_reset(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    configure = [sys.executable, "-m", "pipeline", "configure", "--output", str(out)]
    run([*configure, "experiment=tiny", "finetune.steps=5"], ROOT)
    second = run([*configure, "finetune.steps=3"], ROOT)
    params = load_params(out)
    assert (params.experiment, params.finetune.steps) == ("tiny", 3)  # kept tiny, replaced steps
    assert "kept from the previous configure: experiment=tiny" in second.stdout
    run([*configure, "--reset", "finetune.steps=4"], ROOT)
    params = load_params(out)
    assert (params.experiment, params.finetune.steps) == ("embedded", 4)
