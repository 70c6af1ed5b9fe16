"""The seeds table: one result per seed from `dvc exp show` rows, mean ± sample std per Δ."""
from __future__ import annotations

import math

import pytest

from pipeline.stages.seeds import aggregate, collect, markdown


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
    assert "25 % of naive's out-of-domain image-image loss" in text


@pytest.mark.parametrize("bad", [None, "nan", float("nan"), "x"])
def test_unusable_values_are_skipped(bad: object) -> None:
    by_seed = collect([row(0, bad, 9.0)], "embedded")  # type: ignore[arg-type]
    assert "delta_in_domain" not in by_seed[0]["naive"]
    assert not math.isnan(by_seed[0]["infuse"]["delta_in_domain"])
