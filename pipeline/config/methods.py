"""Each method's fine-tuning recipe: the shared `finetune` section with `methods.<name>` on top."""
from __future__ import annotations

from pipeline.config.keys import ConfigError, unknown_key
from pipeline.config.schema import FinetuneCfg, Params
from pipeline.lib.recipes import RecipeError, merge_recipe


def method_config(params: Params, method: str) -> FinetuneCfg:
    """The fine-tuning recipe of one method: `finetune` with `methods.<method>` applied on top (merged
    once per loaded params, `recipes`)."""
    if method not in params.methods:
        raise ConfigError(f"unknown method '{method}': params.yaml defines {sorted(params.methods)}")
    return recipes(params)[method]


def recipes(params: Params) -> dict[str, FinetuneCfg]:
    """Every method's recipe, merged on first use and kept with the params object."""
    cached = params.__dict__.get("_recipes")
    if cached is None:
        cached = {}
        for method, overrides in params.methods.items():
            try:
                cached[method] = merge_recipe(params.finetune, overrides)
            except RecipeError as err:
                key = f"methods.{method}.{err.key}"
                raise ConfigError(unknown_key(key) if err.message == "unknown key" else f"{key}: {err.message}") from None
        params.__dict__["_recipes"] = cached
    return cached
