"""Ctrl-C and SIGTERM outside a command's run: one ``error:`` line, exit 130 / 143.

:func:`store.cli.run` turns both signals into ``KeyboardInterrupt`` while a command runs,
so the code they interrupt unwinds. Before that (a command's imports take a second or
two: torch, zarr) and after it (interpreter exit) there is nothing to unwind, and Python's
defaults would print a ``KeyboardInterrupt`` traceback or die silently of the signal
(status -2 / -15). Importing this module -- the first thing ``store/__init__.py`` does, and
every package imports ``store`` first -- installs handlers that print one line and exit at
once, but only in a process started as ``python -m <one of this project's packages>``, so
a test runner or notebook that imports the packages keeps its own handlers.

Example (what a user sees on Ctrl-C while ``python -m stage1_teacher.dump`` starts)::

    error: interrupted (Ctrl-C) while starting; nothing was done
"""

from __future__ import annotations

import os
import signal
import sys
import threading

#: The packages whose ``python -m`` entry points get these handlers.
PACKAGES = ("store", "stage1_teacher", "stage2_student", "speaker", "experiments")

#: Set by :func:`store.cli.run` once the command has run: what the line says then.
phase = {"now": "starting"}

_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
_AFTERMATH = {"starting": "nothing was done",
              "exiting": "the command had ended: its output stands as printed"}


def _entry_module() -> str | None:
    """The module of ``python -m MODULE``, from the interpreter's own command line."""
    argv = list(getattr(sys, "orig_argv", ()))
    return argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None


def exit_now(signum: int, frame: object) -> None:
    """The handler: one line on stderr, then exit 128 + signal without unwinding."""
    now = phase["now"]
    os.write(2, f"error: interrupted ({_NAMES.get(signum, signum)}) while {now}; "
                f"{_AFTERMATH[now]}\n".encode())
    os._exit(128 + signum)


def installed() -> bool:
    """Whether this process runs with these handlers (a ``python -m`` entry point)."""
    return signal.getsignal(signal.SIGTERM) is exit_now


def _install() -> None:
    module = _entry_module()
    if module is None or module.split(".")[0] not in PACKAGES:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _NAMES:
        signal.signal(signum, exit_now)


_install()
