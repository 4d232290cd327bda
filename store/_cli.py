"""The store CLI's own glue: logging setup and one-line errors (``store`` imports nothing
from ``speaker``, so it carries this small piece itself; ``speaker.cli.run`` is the same
contract for the training CLIs).

Example::

    run(cli)   # StoreError -> "error: <message>" on stderr, exit status 2
"""

from __future__ import annotations

import logging
import sys

import click

from store.errors import StoreError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run(command: click.Command) -> None:
    """Invoke ``command``: a :class:`StoreError` or a full/read-only disk is one
    ``error:`` line and exit status 2, click's usage errors one line with their status."""
    try:
        command.main(standalone_mode=False)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # e.g. ENOSPC/EROFS writing a plot or a flag
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
