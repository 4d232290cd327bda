"""The command-line contract of every entry point in the project, in one place.

It lives in ``store``, the bottom layer, so every command above it shares it.

* bad input (a :class:`StoreError` or :class:`UserError`, or any other exception type
  passed in ``errors``)
  prints ``error: <message>`` on stderr and exits with status 2 instead of a traceback;
* a file system that refuses a write or read (``OSError``: full or read-only disk,
  permissions) is one ``error:`` line as well, exit 2 -- writers write to temporary names
  and rename, so nothing half-written is left under a final name;
* Ctrl-C (SIGINT) and SIGTERM (what schedulers, ``timeout`` and ``kill`` send) end the
  same way: one line saying what stopped the run and, for a command with ``--resume``,
  how to continue it; exit 130 / 143. Both arrive as ``KeyboardInterrupt`` in the main
  thread, so the code they interrupt unwinds exactly as for Ctrl-C (background writers
  finish their shard, temporary files are removed). Before the command runs (its imports)
  and after it, :mod:`store._signals` answers them with one line as well;
* ``-h`` works as ``--help``.

Example::

    run(cli)   # StoreError -> "error: <message>" on stderr, exit status 2
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from store import _signals
from store.errors import StoreError, UserError
from store.remote import is_remote, is_transport_error

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
"""click context settings every CLI gets from :func:`run`: ``-h`` as well as ``--help``."""


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:  # an s3:// store: one INFO line per client about where it found its settings
        logging.getLogger("botocore").setLevel(logging.WARNING)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _interrupted(command: click.Command, how: str, status: int) -> None:
    resumable = any(p.name == "resume" for p in command.params)
    hint = "; rerun the same command with --resume to continue" if resumable else ""
    click.echo(f"error: interrupted ({how}){hint}", err=True)
    sys.exit(status)


def run(command: click.Command, errors: tuple[type[BaseException], ...] = ()) -> None:
    """Invoke ``command`` with the contract above; ``errors``: more exception types that
    mean bad input (their message is the one line)."""
    handled = (StoreError, UserError, *errors)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    try:
        command.main(standalone_mode=False, **CONTEXT_SETTINGS)
    except handled as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns KeyboardInterrupt (Ctrl-C, or SIGTERM via _on_sigterm) into Abort.
        cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__cause__
        if isinstance(cause, _Terminated):
            _interrupted(command, "SIGTERM", 128 + signal.SIGTERM)
        _interrupted(command, "Ctrl-C", 130)
    except click.UsageError as exc:
        # click's own usage errors (bad option values) as the same single line.
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A disk that is full, read-only or not ours: not a bug, and no traceback helps.
        click.echo(f"error: {os_error_line(exc)}", err=True)
        sys.exit(2)
    except Exception as exc:
        if not is_transport_error(exc):
            raise
        # An object store that stopped answering somewhere the store layer does not wrap.
        click.echo(f"error: lost the connection to the object store ({type(exc).__name__}: "
                   f"{exc}); check the endpoint, credentials and network, then rerun"
                   f"{' with --resume' if any(p.name == 'resume' for p in command.params) else ''}",
                   err=True)
        sys.exit(2)
    finally:
        if in_main_thread:
            # A `python -m` entry point gets _signals' handlers back: a signal from here on
            # is one line, not a silent -15 or a traceback at exit.
            _signals.phase["now"] = "exiting"
            for signum, handler in previous.items():  # None: not set from Python (default)
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


#: What to do about the file-system errors a user can fix, by errno.
_OS_ADVICE = {
    errno.ENOSPC: "free space on that disk, or choose an --out on another one, then rerun "
                  "(with --resume where the command has it)",
    errno.EDQUOT: "free space within your quota, or choose an --out elsewhere, then rerun",
    errno.EACCES: "choose a location you can write (--out), or fix its permissions",
    errno.EPERM: "choose a location you can write (--out), or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a writable --out",
}


def os_error_line(exc: OSError) -> str:
    """The ``error:`` line (without the prefix) for a failing file system: what happened,
    where, and what to do.

    >>> os_error_line(OSError(28, "No space left on device", "/x/logits.zarr"))
    'No space left on device (/x/logits.zarr): free space on that disk, or choose an --out on \
another one, then rerun (with --resume where the command has it)'
    """
    where = f" ({exc.filename})" if exc.filename else ""
    advice = _OS_ADVICE.get(exc.errno or 0, "check the path and the disk, then rerun")
    return f"{exc.strerror or exc}{where}: {advice}"


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


class StoreLocation(click.ParamType):
    """A store's location on the command line: a local path (checked to exist when
    ``exists``) or an object-store URL such as ``s3://bucket/logits.zarr`` (passed on as
    given: ``click.Path`` would fold its ``//``). Converts to ``str``."""

    name = "store"

    def __init__(self, exists: bool = False):
        self.exists = exists

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = os.fspath(value)
        if self.exists and not is_remote(text) and not os.path.exists(text):
            self.fail(f"{text!r} does not exist.", param, ctx)
        return text


F = TypeVar("F", bound=Callable[..., Any])


def storage_option_flag(command: F) -> F:
    """``--storage-option KEY=VALUE`` (repeatable) -> a ``storage_options`` dict (None when
    not given) for a store given as a URL; see store/FORMAT.md, "On an object store"."""
    def parse(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]):
        return parse_options(pairs, "--storage-option") or None

    return click.option(
        "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
        callback=parse,
        help="fsspec option of a store given as a URL (s3://bucket/logits.zarr), repeatable; "
             "values are JSON when they parse, e.g. --storage-option "
             "endpoint_url=http://127.0.0.1:9000. The filesystem's own environment "
             "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) applies without it.",
    )(command)
