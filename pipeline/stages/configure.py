"""`python -m pipeline configure [overrides...]`: compose params.yaml from the Hydra presets.

Uses DVC's own Hydra composition (the function `dvc exp run -S` calls when hydra is enabled), so
`python -m pipeline configure experiment=paper_sop_siglip` and
`dvc exp run -S experiment=paper_sop_siglip` write the same params.yaml. The result is validated
before it replaces params.yaml: a bad key or value leaves the old file in place.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import io as pio
from pipeline.config import load_params

CONF_DIR = Path("conf")


def compose(overrides: list[str], output: Path) -> None:
    """Compose conf/config.yaml + overrides into `output` (validated, atomic)."""
    from dvc.utils.hydra import compose_and_dump

    if not (CONF_DIR / "config.yaml").is_file():
        raise FileNotFoundError(f"{CONF_DIR / 'config.yaml'} not found: run from the project root")
    with pio.atomic_path(output) as tmp:
        tmp_yaml = tmp.with_suffix(".yaml")
        try:
            compose_and_dump(tmp_yaml, str(CONF_DIR.resolve()), None, "config", str(Path(".dvc/hydra").resolve()),
                             overrides)
            load_params(tmp_yaml)  # validate before replacing the user's params.yaml
            tmp_yaml.replace(tmp)
        finally:
            tmp_yaml.unlink(missing_ok=True)


def main(args: argparse.Namespace) -> None:
    from hydra.errors import HydraException

    try:
        compose(args.overrides, Path(args.output))
    except HydraException as err:
        raise ValueError(f"invalid override: {err}") from None
    print(f"[configure] wrote {args.output} ({' '.join(args.overrides) or 'defaults'})")
