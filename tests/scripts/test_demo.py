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


def load_demo():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_student_jobs_are_the_seven_runs_from_one_cache(tmp_path: Path):
    demo_mod = load_demo()
    size = demo_mod.SIZES["full"]
    (tmp_path / "students" / "campp-ce").mkdir(parents=True)
    (tmp_path / "students" / "campp-ce" / "model.pt").write_bytes(b"")  # interrupted run
    jobs = demo_mod.student_jobs(tmp_path, tmp_path / "logits.zarr", ["--data", "toy"], size)
    assert sorted(jobs) == sorted(MODELS[1:])
    for name, job in jobs.items():
        args, (arch, loss) = job.argv, name.rsplit("-", 1)
        flag = dict(zip(args, args[1:], strict=False))
        assert flag["--cache"] == str(tmp_path / "logits.zarr") and flag["--loss"] == loss
        assert flag["--arch"] == arch and flag["--epochs"] == str(size.student_epochs[arch])
        assert ("--resume" in args) == (name == "campp-ce")
        if loss == "dkd":
            assert (flag["--alpha"], flag["--beta"], flag["--temperature"]) == ("1", "2", "1")
    # two CAM++ runs (3 epochs) outlast the rest: the lanes split them from the ResNet34s
    est = {name: job.est_s for name, job in jobs.items()}
    assert est["campp-ce"] > est["resnet34-ce"] > est["xvector-ce"] > 0
    lanes = demo_mod.plan_lanes(est, 2)
    assert sorted(n for lane in lanes for n in lane) == sorted(jobs)
    assert [n for n in lanes[0] if n.startswith("campp")] == ["campp-ce", "campp-dkd"]


def test_plan_lanes_finds_the_shortest_split():
    demo_mod = load_demo()
    est = {"a": 3.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 2.0}
    # 6 + 6 is the best split; greedy longest-first ends at 7 (a + c + e against b + d)
    assert sorted(demo_mod.plan_lanes(est, 2)) == [["a", "b"], ["c", "d", "e"]]
    lanes3 = demo_mod.plan_lanes(est, 3)
    assert max(sum(est[n] for n in lane) for lane in lanes3) == 5.0
    assert demo_mod.plan_lanes({}, 2) == [[], []]


def test_no_lanes_is_one_usage_error(tmp_path: Path):
    bad = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "d"), "--parallel", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--parallel" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_ordering_claims():
    demo_mod = load_demo()

    def results(teacher, **eers):
        return {"teacher": {"eer": teacher}, **{k.replace("_", "-"): {"eer": v}
                                                for k, v in eers.items()}}

    good = results(0.10, xvector_ce=0.20, xvector_kd=0.19, xvector_dkd=0.18, resnet34_ce=0.22,
                   resnet34_dkd=0.20, campp_ce=0.24, campp_dkd=0.21)
    assert all(demo_mod.ordering(good).values())
    bad = {**good, "teacher": {"eer": 0.18}, "campp-dkd": {"eer": 0.26}}
    assert list(demo_mod.ordering(bad).values()) == [False, False, False]


def test_dkd_vs_ce_is_beyond_noise_only_when_the_intervals_are_apart():
    demo_mod = load_demo()

    def model(low, high):
        return {"eer": (low + high) / 2, "eer_ci95_low": low, "eer_ci95_high": high}

    results = {"teacher": model(0.05, 0.10),
               "xvector-ce": model(0.20, 0.30), "xvector-dkd": model(0.10, 0.19),  # apart
               "campp-ce": model(0.20, 0.30), "campp-dkd": model(0.15, 0.21)}  # overlapping
    assert demo_mod.dkd_vs_ce_noise(results) == (
        "DKD vs CE beyond the noise (95 % intervals apart): xvector; within noise: campp")
