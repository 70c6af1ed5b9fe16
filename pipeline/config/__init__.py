"""The one configuration: params.yaml, its schema, loading, validation and key suggestions.

params.yaml is the resolved configuration that DVC, Snakemake and every stage read. Hydra presets
under `conf/` compose it (`python -m pipeline configure experiment=...`, or DVC's Hydra mode on
`dvc exp run -S ...`). Loading goes through OmegaConf structured configs (`schema`), so an unknown
key or a wrong type fails before any work with the dotted key in the message (`keys`); `validate`
then checks ranges and cross-references. The names below are the package's public interface.
"""
from pipeline.config.keys import ConfigError, unknown_key
from pipeline.config.load import PARAMS_FILE, load_params, to_dict
from pipeline.config.methods import method_config, recipes
from pipeline.config.schema import (DatasetCfg, DownloadCfg, EvalCfg, EvalSetCfg, FewShotCfg, FewShotSettings,
                                    FinetuneCfg, IndexCfg, Params, StageResources, TuningCfg)

__all__ = ["ConfigError", "DatasetCfg", "DownloadCfg", "EvalCfg", "EvalSetCfg", "FewShotCfg", "FewShotSettings",
           "FinetuneCfg", "IndexCfg", "PARAMS_FILE", "Params", "StageResources", "TuningCfg", "load_params",
           "method_config", "recipes", "to_dict", "unknown_key"]
