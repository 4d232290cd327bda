"""Shared glue for the project's click CLIs: the error and signal contract, option parsing.

Every entry point runs through :func:`run`, the contract of :mod:`store.cli` (one
``error:`` line and exit 2 for bad input and refusing file systems; Ctrl-C and SIGTERM as
one line with the ``--resume`` hint, exit 130 / 143; ``-h``) with ``UserError`` among the
bad-input errors. Writers go through :mod:`speaker.atomic`, so nothing half-written is
left under a final name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from speaker.atomic import atomic_write_text
from speaker.errors import UserError
from store.cli import run as _run_with_contract
from store.cli import setup_logging

__all__ = ["parse_options", "run", "setup_logging", "write_json"]


def run(command: click.Command, user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Invoke ``command`` with the contract above; ``user_errors``: more exception types
    that mean bad input."""
    _run_with_contract(command, (UserError, *user_errors))


def parse_options(pairs: tuple[str, ...], what: str = "--arch-opt") -> dict[str, Any]:
    """Parse repeated ``key=value`` options; values are JSON when they parse as JSON.

    >>> parse_options(("channels=256", "name=x"))
    {'channels': 256, 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {pair!r}: expected key=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (see :mod:`speaker.atomic`): a kill never leaves half a file."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
