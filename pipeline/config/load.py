"""Loading params.yaml: parse, type-check against the schema, validate; the methods' recipes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config.keys import ConfigError, describe_error
from pipeline.config.schema import Params
from pipeline.config.validate import validate

PARAMS_FILE = Path("params.yaml")


def load_params(path: Path | str = PARAMS_FILE, overrides: list[str] | None = None,
                label: str | None = None) -> Params:
    """Read params.yaml (plus optional `key=value` overrides), type-check and validate it. Messages
    name the key, prefixed by `label` (default: the file's path; '' for none)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path} (run from the project root)")
    prefix = f"{path if label is None else label}: " if label != "" else ""
    schema = OmegaConf.structured(Params)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.load(path))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
        params: Params = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise ConfigError(prefix + describe_error(err)) from None
    validate(params)
    return params



def to_dict(params: Params) -> dict[str, Any]:
    """Plain-dict view (for writing params.yaml and provenance metadata)."""
    return OmegaConf.to_container(OmegaConf.structured(params), resolve=True)  # type: ignore[return-value]
