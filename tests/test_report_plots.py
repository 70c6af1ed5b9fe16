"""The report's figures: fixed colours, every headline Δ as a panel, seed spread drawn when present."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from pipeline.lib import headlines
from pipeline.lib.headlines import HEADLINES
from pipeline.stages import report_plots

METHODS = ["pretrained", "naive", "infuse", "infuse_distill", "lwf", "gift"]


def summary(extra: bool = False) -> dict[str, dict[str, float]]:
    out = {}
    for i, m in enumerate(METHODS):
        row = {"in_domain": 1.0 + i, "ood_image_image": 30.0 - i, "ood_image_text": 5.0, "zero_shot": 40.0 - 2 * i}
        if m != "pretrained":
            row.update({"delta_in_domain": float(i), "delta_ood_image_image": -float(i), "delta_ood_image_text": -0.5,
                        "delta_zero_shot": -2.0 * i})
            if extra:
                row["delta_ood_unseen"] = -1.5
        out[m] = row
    return out


def test_key_methods_keep_their_colours_whatever_else_runs() -> None:
    alone = report_plots.method_colours(["naive", "infuse"])
    many = report_plots.method_colours(METHODS)
    assert alone["naive"] == many["naive"] == report_plots.KEY_COLOURS["naive"]
    assert alone["infuse"] == many["infuse"] == report_plots.KEY_COLOURS["infuse"]
    assert len(set(many.values())) == len(METHODS)
    assert many["infuse_distill"] in report_plots.INFUSE_SHADES and many["lwf"] in report_plots.OTHER_COLOURS


def test_every_delta_is_a_panel_known_ones_first() -> None:
    order = [f"delta_{key}" for key in HEADLINES]
    names = report_plots.delta_names(summary(extra=True))
    assert names == sorted(names, key=order.index)          # the headline order
    assert {"delta_in_domain", "delta_zero_shot", "delta_ood_unseen"} <= set(names)
    assert headlines.label("delta_zero_shot") == "Zero-shot accuracy"
    assert headlines.label("delta_ood_unseen") == "Unseen-domain image-image (near and far)"
    assert headlines.label("delta_ood_something") == "Out-of-domain something"


def test_figures_are_drawn_with_and_without_seed_spread(tmp_path: Path) -> None:
    seeds = {"naive": {"delta_in_domain": {"mean": 2.1, "std": 0.3, "n": 3},
                       "delta_ood_image_image": {"mean": -1.2, "std": 0.4, "n": 3}},
             "infuse": {"delta_in_domain": {"mean": 2.0, "std": 0.0, "n": 1}}}  # one seed: no spread to draw
    assert report_plots.seed_spread(seeds, "naive", "delta_in_domain") == seeds["naive"]["delta_in_domain"]
    assert report_plots.seed_spread(seeds, "infuse", "delta_in_domain") is None
    assert report_plots.seed_spread(None, "naive", "delta_in_domain") is None
    sizes = {}
    for name, spread in (("plain", None), ("seeds", seeds)):
        report_plots.plot_deltas(summary(extra=True), tmp_path / f"deltas_{name}.png", spread)
        report_plots.plot_retention(summary(extra=True), {}, "naive", tmp_path / f"retention_{name}.png", spread)
        sizes[name] = Image.open(tmp_path / f"deltas_{name}.png").size
    assert sizes["plain"][0] > 5 * 300  # five panels side by side
    assert (tmp_path / "deltas_seeds.png").read_bytes() != (tmp_path / "deltas_plain.png").read_bytes()
