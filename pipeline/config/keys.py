"""Errors that name the key, and what a misspelt key could have meant."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from omegaconf.errors import OmegaConfBaseException

from pipeline.config.schema import FewShotSettings, FinetuneCfg, Params


class ConfigError(ValueError):
    """A params.yaml problem, always naming the offending key."""


def describe_error(err: OmegaConfBaseException) -> str:
    """One line naming the key: an unknown key with what it could have meant, or the bad value."""
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, (KeyError, AttributeError)):  # ConfigKeyError / ConfigAttributeError: not in the schema
        return unknown_key(key)
    return f"{key}: {err.msg.splitlines()[0]}"


def unknown_key(key: str, tree: dict[str, Any] | None = None) -> str:
    """'finetune.stpes: unknown key, did you mean finetune.steps?': the first part of a dotted key
    that neither the schema nor, below a free-named level (datasets.<name>), `tree` (the composed
    configuration) knows, with its closest sibling."""
    parts = key.split(".")
    for i, name in enumerate(parts):
        parent = ".".join(parts[:i])
        known = known_keys(parent, tree)
        if known is not None and name not in known:
            return f"{parent + '.' if parent else ''}{name}: unknown key" + suggestion(name, known, parent)
    return f"{key}: unknown key"


def suggestion(name: str, known: list[str], parent: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f", did you mean {parent + '.' if parent else ''}{close[0]}?"
    return f" (valid: {', '.join(sorted(known))})" if known else ""


def _override_table(parts: list[str]) -> type | None:
    """Plain dicts whose keys are another schema's: a method's entries override `finetune`."""
    if len(parts) == 2 and parts[0] == "methods":
        return FinetuneCfg
    return FewShotSettings if parts == ["fewshot", "settings"] else None


def known_keys(dotted: str, tree: dict[str, Any] | None = None) -> list[str] | None:
    """The keys allowed under a dotted path ('' = top level): a dataclass's fields; at a free-named
    level (datasets, methods, eval.in_domain, resources) the names `tree` has there; None when
    unknowable (no tree) or below a leaf."""
    node: Any = Params
    parts = [p for p in dotted.split(".") if p]
    for i, part in enumerate(parts):
        if dataclasses.is_dataclass(node):
            hints = typing.get_type_hints(node)
            if part not in hints:
                return None
            node = _unwrap_optional(hints[part])
        elif typing.get_origin(node) is dict:
            node = _unwrap_optional(typing.get_args(node)[1])
        else:
            return None
        node = _override_table(parts[: i + 1]) or node
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    if typing.get_origin(node) is dict and tree is not None:
        sub: Any = tree
        for part in parts:
            sub = sub.get(part, {}) if isinstance(sub, dict) else {}
        return list(sub) if isinstance(sub, dict) else None
    return None


def _unwrap_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
