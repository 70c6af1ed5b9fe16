"""`python -m pipeline <command>`: the one entry point used by DVC, Snakemake and people.

The commands are declared in `pipeline.commands`; a command's module is imported only when it
runs, so `--help` and the light stages do not pay torch's start-up time.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time

from pipeline.commands import COMMANDS, Command, Exclusive, Option
from pipeline.stop import Stopped, stop_on_signals


def _add(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, option: Option) -> None:
    parser.add_argument(*option.flags, help=option.help or None, **dict(option.kwargs or {}))


def add_command(sub: argparse._SubParsersAction, command: Command) -> None:
    p = sub.add_parser(command.name, help=command.help)
    if command.target:
        p.add_argument(command.target)
    if command.reads_params:
        p.add_argument("--params", default="params.yaml", help="the configuration file (default params.yaml)")
        p.add_argument("--threads", type=int, default=None,
                       help="override runtime.threads (Snakemake passes the cores its job was given)")
    for item in command.options:
        if isinstance(item, Exclusive):
            group = p.add_mutually_exclusive_group(required=item.required)
            for option in item.options:
                _add(group, option)
        else:
            _add(p, item)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for command in COMMANDS.values():
        add_command(sub, command)
    return parser


def param_overrides(args: argparse.Namespace) -> list[str]:
    """`key=value` overrides of params.yaml that come from command-line flags."""
    return [] if args.threads is None else [f"runtime.threads={args.threads}"]


def error_line(err: BaseException) -> str:
    """The error's own message. One raised in a DataLoader worker comes back as
    "Caught X in DataLoader worker process N.\nOriginal Traceback ...\n<module>.X: <message>"
    (torch's ExceptionWrapper): keep only the original message, not the worker's traceback."""
    text = str(err)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return text
    kind = type(err)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    _, found, message = text.rpartition(f"\n{name}: ")
    return message.strip() if found else text


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    command = COMMANDS[args.stage]
    if command.reads_params:  # `load_params(args.params, args.overrides)`
        args.overrides = param_overrides(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    entry = getattr(importlib.import_module(command.module), command.entry)
    start = time.time()
    try:
        with stop_on_signals():
            entry(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # ConfigError is a ValueError
        print(f"error [{args.stage}]: {error_line(err)}", file=sys.stderr)
        sys.exit(1)
    except (Stopped, KeyboardInterrupt) as stop:
        name = stop.signal if isinstance(stop, Stopped) else "SIGINT"
        print(f"error [{args.stage}]: stopped by {name}; its unfinished outputs were removed", file=sys.stderr)
        sys.exit(128 + signal.Signals[name].value)
    if command.reports_time:
        print(f"[{args.stage}] done in {time.time() - start:.1f} s", file=sys.stderr)
