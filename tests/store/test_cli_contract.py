"""The CLI contract: ``-h`` and ``--help`` with an example (stage 2's two CLIs are tested
with their modules), architecture options spelled alike, and, through store.cli.run, one
``error:`` line for a failing file system and for interrupts (Ctrl-C, SIGTERM), saying how
to continue."""

from __future__ import annotations

import errno
import os
import signal

import click
import pytest

import speaker.models.__main__ as models_main
import speaker.toy.__main__ as toy
import store.__main__ as store_main
from speaker.io import prepare_voxceleb
from stage1_teacher import dump, verify
from stage1_teacher import train as teacher_train
from stage2_student import train as student_train

# (name, command, subcommand args) of every CLI this project ships
CLIS = [
    ("speaker.toy", toy.cli, []),
    ("speaker.models", models_main.cli, []),
    ("stage1_teacher.train", teacher_train.cli, []),
    ("stage1_teacher.dump", dump.cli, []),
    ("stage1_teacher.verify", verify.cli, []),
    ("store", store_main.cli, []),
    *[(f"store {sub}", store_main.cli, [sub]) for sub in sorted(store_main.cli.commands)],
    ("speaker.io.prepare_voxceleb", prepare_voxceleb.cli, []),
]


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("name, command, sub", CLIS, ids=[c[0] for c in CLIS])
def test_help_has_an_example(name, command, sub, flag, run_cli):
    result = run_cli(command, [*sub, flag])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Usage:")
    assert "Example" in result.stdout, result.stdout


def test_architecture_options_are_spelled_alike():
    spellings = {}
    for command in (models_main.cli, teacher_train.cli, student_train.cli):
        for param in command.params:
            for opt in param.opts:
                if "arch" in opt:
                    spellings.setdefault(opt, []).append(command.name)
    assert set(spellings) == {"--arch", "--arch-opt"}, spellings


@click.command()
@click.option("--resume", is_flag=True)
@click.option("--what", default="full")
def _writer(resume: bool, what: str) -> None:
    if what == "full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/model.pt")
    if what == "ctrl-c":
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the command")


@pytest.mark.parametrize("what, code, line", [
    ("full", 2, "error: No space left on device (/data/out/model.pt): free space on that disk, "
                "or choose an --out on another one, then rerun (with --resume where the "
                "command has it)"),
    ("ctrl-c", 130, "error: interrupted (Ctrl-C); rerun the same command with --resume to "
                    "continue"),
    ("sigterm", 143, "error: interrupted (SIGTERM); rerun the same command with --resume to "
                     "continue"),
])
def test_one_line_for_disks_and_signals(what, code, line, run_cli):
    before = signal.getsignal(signal.SIGTERM)
    result = run_cli(_writer, ["--what", what])
    assert result.exit_code == code
    assert result.error_lines == [line] and "Traceback" not in result.stderr
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_no_resume_hint_without_resume(run_cli):
    @click.command()
    def stop() -> None:
        raise KeyboardInterrupt

    assert run_cli(stop, []).error_lines == ["error: interrupted (Ctrl-C)"]
