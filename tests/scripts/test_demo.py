"""scripts/demo.py --quick, the README's first command at smoke size, end to end: corpus,
teacher, dump, both verifies, seven students from the one cache (two at a time), one table
with bootstrap intervals and a DET plot, stage times; a second run finds every step done and
only re-evaluates. The quick run never rewrites docs/demo.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
MODELS = ["teacher", "xvector-kd", *(f"{arch}-{loss}" for arch in ("xvector", "resnet34", "campp")
                                     for loss in ("ce", "dkd"))]
DOC = SCRIPT.parents[1] / "docs" / "demo.md"


def demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--quick"],
                          capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_resumes(tmp_path: Path):
    out = tmp_path / "demo"
    doc_before = DOC.read_bytes()
    first = demo(out)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results" / "results.json").read_text())
    assert sorted(results) == sorted(MODELS)
    assert all(0.0 <= r["eer_ci95_low"] <= r["eer_ci95_high"] <= 1.0 for r in results.values())
    assert (out / "results" / "det.png").stat().st_size > 0
    table = (out / "results" / "results.md").read_text()
    assert all(f"| {name} |" in table for name in MODELS) and table in first.stdout
    assert (out / "verify.txt").exists()
    assert f"DET plot: {out / 'results' / 'det.png'}" in first.stdout
    times = json.loads((out / "timings.json").read_text())
    for stage in ("corpus", "teacher", "dump", "verify", "students", "evaluate"):
        assert times[stage]["wall_s"] > 0 and f"| {stage} |" in first.stdout
    assert DOC.read_bytes() == doc_before

    checkpoints = {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")}
    second = demo(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")} == checkpoints
    for step in ("teacher:", "dump:", "student "):
        assert step not in second.stderr  # done steps are skipped, not rerun
    assert json.loads((out / "results" / "results.json").read_text()) == results
