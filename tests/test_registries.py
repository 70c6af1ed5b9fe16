"""Each extension point is one declaration: a dummy dataset source, headline metric and few-shot method,
registered in a test, reach validation, the report and the summary with nothing else edited."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from pipeline.config import ConfigError, load_params
from pipeline.lib import fewshot, headlines
from pipeline.lib.recipes import FEWSHOT_METHODS, FewShotMethod, FewShotSettings, register_fewshot
from pipeline.sources import registry
from pipeline.stages import prepare, report, report_md, seeds


def read_dummy(name: str, cfg) -> tuple[pl.DataFrame, dict]:
    """A dummy embedded source: 2 classes of 3 blank images each, one train and one test class."""
    n = 6
    return pl.DataFrame({"dataset": [name] * n, "split": ["train"] * 3 + ["test"] * 3, "subset": [name] * n,
                         "label": [0, 0, 0, 1, 1, 1], "class_name": ["a"] * 3 + ["b"] * 3,
                         "path": [f"{i}.png" for i in range(n)], "image": [b""] * n, "captions": [[]] * n},
                        schema_overrides={"image": pl.Binary, "captions": pl.List(pl.String)}), {"dummy": True}


class Nearest:
    """A dummy few-shot method: the class of the nearest shot."""

    def __init__(self, dim: int, s: FewShotSettings):
        pass

    def fit(self, f, y, t, s, val=None) -> "Nearest":
        self.f, self.y, self.n = f, y, t.shape[0]
        return self

    def predict(self, f, t, base: bool) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.y[(f @ self.f.T).argmax(1)], self.n).float()


@pytest.fixture
def registered():
    """The three dummies registered for one test, the registries restored afterwards."""
    saved = (dict(registry.SOURCES), dict(headlines.HEADLINES), dict(FEWSHOT_METHODS))
    registry.register(registry.Source("dummy", f"{__name__}.read_dummy", "made up by a test", embedded=True))
    headlines.register(headlines.Headline("in_domain_top1", "in-domain top-1", "In-domain top-1", "image_image",
                                          "top_1", domain="in"))
    register_fewshot(FewShotMethod("nearest", f"{__name__}.Nearest", label="Nearest shot", novel=False))
    yield
    for table, old in zip((registry.SOURCES, headlines.HEADLINES, FEWSHOT_METHODS), saved):
        table.clear()
        table.update(old)


def params_with(tmp_path: Path, tiny_params_file: Path, edit) -> Path:
    tree = yaml.safe_load(tiny_params_file.read_text())
    edit(tree)
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(tree))
    return out


def test_a_registered_source_reaches_validation_and_prepare(registered, tmp_path, tiny_params_file) -> None:
    def add(tree):
        tree["datasets"]["extra"] = {"source": "dummy"}
    params = load_params(params_with(tmp_path, tiny_params_file, add))
    frame, meta = prepare.build_manifest("extra", params.datasets["extra"])
    assert frame["id"].to_list() == list(range(6)) and meta == {"dummy": True}

    def misspell(tree):
        tree["datasets"]["extra"] = {"source": "dumy"}
    with pytest.raises(ConfigError, match="datasets.extra.source: 'dumy' is not one of .*'dummy'"):
        load_params(params_with(tmp_path, tiny_params_file, misspell))


def fake_result(top1: float) -> dict:
    sets = {"flags": {"domain": "in", "kind": "target", "map@20": 0.5, "top_1": top1},
            "shapes": {"domain": "out", "kind": "replay", "map@20": 0.3, "top_1": 0.4}}
    return {"image_image": sets, "image_text": {}, "zero_shot": {},
            "selection": {"select_on": "all", "step": 1, "target": 0.5, "generic": 0.3}}


def test_a_registered_headline_reaches_the_summary_the_report_and_the_seeds_table(
        registered, tiny_params_file, capsys) -> None:
    params = load_params(tiny_params_file)
    results = {"pretrained": fake_result(0.25), "naive": fake_result(0.75)}
    summary = report.summarize(results, k=20)
    assert summary["naive"]["in_domain_top1"] == 75.0 and summary["naive"]["delta_in_domain_top1"] == 50.0
    text = report_md.markdown(dataclasses.replace(params, methods={"pretrained": {}, "naive": {}}, tuning={}),
                              summary, results, {"sets": {"flags": "target", "shapes": "replay"}}, {})
    header = next(line for line in text.splitlines() if line.startswith("| method | in-domain |"))
    assert header.endswith("| in-domain top-1 |") and "+50.00" in text
    report.print_summary(summary)
    assert "in-domain top-1" in capsys.readouterr().out
    assert "delta_in_domain_top1" in seeds.deltas()


def test_a_registered_fewshot_method_reaches_validation_the_stage_and_the_report(
        registered, tmp_path, tiny_params_file) -> None:
    def use(tree):
        tree["fewshot"]["methods"] = ["zero_shot", "nearest"]
    params = load_params(params_with(tmp_path, tiny_params_file, use))
    assert params.fewshot.methods == ["zero_shot", "nearest"]
    f = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    y, t = torch.tensor([0, 0, 1, 1, 2, 2]), torch.eye(3, 4)
    fitted = fewshot.make("nearest", 4, FewShotSettings()).fit(f, y, t, FewShotSettings())
    assert np.array_equal(fitted.predict(f, t, True).argmax(1).numpy(), y.numpy())
    cells = {"zero_shot": {"1": {"base": 50.0, "novel": 40.0}}, "nearest": {"1": {"base": 90.0, "novel": None}}}
    table = "\n".join(report_md.fewshot_markdown({"dataset": "web", "subset": "shapes", "base_classes": 3,
                                                  "novel_classes": 3, "repeats": 1, "results": cells}))
    assert "| Nearest shot | 90.0 / n/a |" in table
