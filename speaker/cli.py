"""Shared glue for the project's click CLIs: logging setup and one-line errors.

Every entry point runs through :func:`run`, so bad input (``UserError`` or any
other exception type passed in ``user_errors``) prints ``error: <message>`` on
stderr and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from speaker.errors import UserError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
"""click context settings every CLI gets from :func:`run`: ``-h`` as well as ``--help``."""


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run(command: click.Command, user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Invoke ``command`` turning user errors into one line and exit status 2."""
    handled = (UserError, *user_errors)
    try:
        command.main(standalone_mode=False, **CONTEXT_SETTINGS)
    except handled as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # click's own usage errors (bad option values) as the same single line.
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


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
    """Write JSON atomically (tmp file + rename) so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
