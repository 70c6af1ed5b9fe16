"""`python -m pipeline configure [overrides...]`: compose params.yaml from the Hydra presets.

Uses DVC's own Hydra composition (the function `dvc exp run -S` calls when hydra is enabled), so
`python -m pipeline configure experiment=paper_sop_siglip` and
`dvc exp run -S experiment=paper_sop_siglip` write the same params.yaml. The result is validated
before it replaces params.yaml: a bad key or value leaves the old file in place.

Overrides accumulate: the first line of the written file records the overrides it was composed
with, and the next `configure` into the same file starts from them (a new value for the same key
replaces the old one), so `configure experiment=tiny` then `configure finetune.steps=3` gives the
tiny preset with 3 steps. `--reset` starts from the presets alone.
"""
from __future__ import annotations

import argparse
import difflib
import re
import shlex
from pathlib import Path

from pipeline import io as pio
from pipeline.config import ConfigError, load_params, unknown_key

CONF_DIR = Path("conf")
HEADER = "# Written by `python -m pipeline configure{}`; the next configure keeps these overrides (--reset drops them).\n"
RECORDED = re.compile(r"^# Written by `python -m pipeline configure(.*?)`")


def recorded_overrides(path: Path) -> list[str]:
    """The overrides the file at `path` was composed with (none if configure did not write it)."""
    if not path.is_file():
        return []
    with path.open() as f:
        match = RECORDED.match(f.readline())
    return shlex.split(match.group(1)) if match else []


def override_key(override: str) -> str:
    """`+a.b=1`, `++a.b=1`, `~a.b`, `a.b=1` → `a.b`."""
    return override.lstrip("+~").split("=", 1)[0]


def merge_overrides(kept: list[str], new: list[str]) -> list[str]:
    """The kept overrides, less those whose key a new one sets, then the new ones."""
    replaced = {override_key(o) for o in new}
    return [o for o in kept if override_key(o) not in replaced] + list(new)


def compose(overrides: list[str], output: Path) -> None:
    """Compose conf/config.yaml + overrides into `output` (validated, atomic, overrides recorded)."""
    from dvc.utils.hydra import compose_and_dump

    if not (CONF_DIR / "config.yaml").is_file():
        raise FileNotFoundError(f"{CONF_DIR / 'config.yaml'} not found: run from the project root")
    with pio.atomic_path(output) as tmp:
        tmp_yaml = tmp.with_suffix(".yaml")
        try:
            compose_and_dump(tmp_yaml, str(CONF_DIR.resolve()), None, "config", str(Path(".dvc/hydra").resolve()),
                             overrides)
            load_params(tmp_yaml, label="")  # validate before replacing the user's params.yaml
            tmp.write_text(HEADER.format("".join(" " + shlex.quote(o) for o in overrides)) + tmp_yaml.read_text())
        finally:
            tmp_yaml.unlink(missing_ok=True)


def composed_tree(overrides: list[str]) -> dict | None:
    """The configuration the presets + `overrides` compose to, as plain data (None if they do not)."""
    import tempfile

    import yaml
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        try:
            compose_and_dump(out, str(CONF_DIR.resolve()), None, "config", str(Path(".dvc/hydra").resolve()), overrides)
        except HydraException:
            return None
        return yaml.safe_load(out.read_text())


def explain_hydra_error(message: str, overrides: list[str]) -> str:
    """Hydra's message as one line that names the key: what a misspelt key or preset could have meant."""
    key = re.search(r"Could not override '([^']+)'", message)
    if key:  # names below free-named levels (datasets.<name>) come from what the other overrides compose to
        others = [o for o in overrides if override_key(o) != key.group(1)]
        return unknown_key(key.group(1), composed_tree(others))
    option = re.search(r"Could not find '([^'/]+)/([^']+)'", message)
    if option:
        group, name = option.groups()
        choices = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f"did you mean {group}={close[0]}?" if close else f"choose one of {', '.join(choices)}"
        return f"{group}={name}: no such preset in {CONF_DIR / group}, {hint}"
    return f"invalid override: {message.strip().splitlines()[0]}"


def main(args: argparse.Namespace) -> None:
    from hydra.errors import HydraException

    output = Path(args.output)
    kept = [] if args.reset else recorded_overrides(output)
    overrides = merge_overrides(kept, args.overrides)
    try:
        compose(overrides, output)
    except HydraException as err:
        raise ConfigError(explain_hydra_error(str(err), overrides)) from None
    used = " ".join(overrides) or "the presets alone"
    still = [o for o in kept if o in overrides]
    note = (f" (kept from the previous configure: {' '.join(still)}; --reset drops them)" if still
            else "")
    print(f"[configure] wrote {output}: {used}{note}")
