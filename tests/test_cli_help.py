"""Every command line answers ``-h`` as ``--help``, with at least one example, through its
real entry point (``python -m MODULE`` / ``python scripts/NAME.py``, run in-process)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

# runpy warns that the module ran again after the test session imported it: harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")

REPO = Path(__file__).resolve().parents[1]
MODULES = ["speaker.toy", "speaker.models", "store", "stage1_teacher.train",
           "stage1_teacher.dump", "stage1_teacher.verify", "stage2_student.train",
           "stage2_student.evaluate", "speaker.io.prepare_voxceleb"]
# every script with a command line
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text())


def help_text(run, name: str, flag: str, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [name, flag])
    try:
        run()
    except SystemExit as exc:  # a command run standalone exits after its help
        assert exc.code in (0, None), exc.code
    out = capsys.readouterr().out
    assert out.startswith("Usage:"), out[:200]
    return out


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_module_help(module: str, flag: str, monkeypatch, capsys):
    text = help_text(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True),
                     module, flag, monkeypatch, capsys)
    assert "Example" in text, f"{module} --help shows no example"


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script: str, monkeypatch, capsys):
    path = str(REPO / "scripts" / script)
    text = help_text(lambda: runpy.run_path(path, run_name="__main__"), script, "-h",
                     monkeypatch, capsys)
    assert "Example" in text, f"{script} --help shows no example"
