"""scripts/demo.py --quick (experiments.demo), the README's first command at smoke size, end
to end: corpus, teacher, dump, both verifies, seven students from the one cache (two at a
time), one table with bootstrap intervals and a DET plot, stage times, its page in OUT; a
second run finds every step done and only re-evaluates. The demo leaves docs/ alone unless
told to publish."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.demo import page
from experiments.demo.pipeline import SIZES, student_runs
from experiments.recipes import TUNING
from experiments.scheduler import plan_lanes

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
    written = (out / "demo.md").read_text()
    # it prints the page's claims over its counted runs (one: no check of these sizes)
    claims = first.stdout.split("What holds over 1 run(s)", 1)[1].strip().splitlines()[1:]
    assert claims and all(line in written for line in claims)
    assert "| model | params (M) | 2-s latency (ms) | EER (%)" in written and "![DET curves](demo_det.png)" in written
    assert all(f"| {name} | " in written for name in MODELS)
    kept = json.loads((out / "results" / "models.json").read_text())
    assert sorted(kept) == sorted(MODELS) and all(m["params"] > 0 and m["eer_boot"]
                                                  for m in kept.values())
    assert "holds in 1 of 1 runs" in written or "not in: main" in written
    assert "| corpus seed 1 | " in written and "| student seed 1 | " in written
    assert str(tmp_path) not in written and (out / "demo_det.png").stat().st_size > 0

    checkpoints = {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")}
    second = demo(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")} == checkpoints
    for step in ("teacher:", "dump:", "student "):
        assert step not in second.stderr  # done steps are skipped, not rerun
    assert json.loads((out / "results" / "results.json").read_text()) == results


def test_student_runs_are_the_seven_runs_from_one_cache(tmp_path: Path):
    size = SIZES["full"]
    runs = student_runs(tmp_path, tmp_path / "logits.zarr", ["--data", "toy"], size, 0)
    assert sorted(runs) == sorted(MODELS[1:])
    for name, run in runs.items():
        args, (arch, loss) = run.argv, name.rsplit("-", 1)
        flag = dict(zip(args, args[1:], strict=False))
        assert flag["--cache"] == str(tmp_path / "logits.zarr") and flag["--loss"] == loss
        assert flag["--arch"] == arch and flag["--epochs"] == str(size.epochs(arch))
        assert flag["--out"] == str(tmp_path / "students" / name) and run.kind == "student"
        if loss == "dkd":  # the setting chosen on dev (docs/tuning.json), else the paper's
            s = TUNING.settings
            assert (flag["--alpha"], float(flag["--beta"]), float(flag["--temperature"])) == \
                ("1", s["dkd.beta"], s["dkd.temperature"])
    # two CAM++ runs (3 epochs) outlast the rest: the lanes split them from the ResNet34s
    est = {name: run.est_s for name, run in runs.items()}
    assert est["campp-ce"] > est["resnet34-ce"] > est["xvector-ce"] > 0
    lanes = plan_lanes(est, 2)
    assert sorted(n for lane in lanes for n in lane) == sorted(runs)
    assert [n for n in lanes[0] if n.startswith("campp")] == ["campp-ce", "campp-dkd"]


def test_plan_lanes_finds_the_shortest_split():
    est = {"a": 3.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 2.0}
    # 6 + 6 is the best split; greedy longest-first ends at 7 (a + c + e against b + d)
    assert sorted(plan_lanes(est, 2)) == [["a", "b"], ["c", "d", "e"]]
    lanes3 = plan_lanes(est, 3)
    assert max(sum(est[n] for n in lane) for lane in lanes3) == 5.0
    assert plan_lanes({}, 2) == [[], []]


def test_no_lanes_is_one_usage_error(tmp_path: Path):
    bad = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "d"), "--parallel", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--parallel" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "d").exists()  # refused before anything is written


def test_ordering_claims():
    def results(teacher, **eers):
        return {"teacher": {"eer": teacher}, **{k.replace("_", "-"): {"eer": v}
                                                for k, v in eers.items()}}

    good = results(0.10, xvector_ce=0.20, xvector_kd=0.19, xvector_dkd=0.18, resnet34_ce=0.22,
                   resnet34_dkd=0.20, campp_ce=0.24, campp_dkd=0.21)
    assert all(page.ordering(good).values())
    bad = {**good, "teacher": {"eer": 0.18}, "campp-dkd": {"eer": 0.26}}
    assert list(page.ordering(bad).values()) == [False, False, False]


def _model(eer, low, high, boot=None):
    m = {"eer": eer, "eer_ci95_low": low, "eer_ci95_high": high}
    return m if boot is None else {**m, "eer_boot": boot}


def test_dkd_vs_ce_by_paired_bootstrap_else_by_intervals():
    import numpy as np

    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.03, 200)  # the speaker resampling moves both models together
    ce = _model(0.20, 0.15, 0.26, list(0.20 + shared))
    apart = {"xvector-ce": ce, "xvector-dkd": _model(0.18, 0.13, 0.24, list(0.18 + shared))}
    # the intervals overlap, but the paired difference is 2 points in every replicate
    assert page.dkd_vs_ce(apart, "xvector") == ("lower", "paired speaker bootstrap, 95 %")
    noisy = {"xvector-ce": ce, "xvector-dkd": _model(
        0.19, 0.14, 0.25, list(0.19 + shared + rng.normal(0, 0.03, 200)))}
    assert page.dkd_vs_ce(noisy, "xvector")[0] == "within noise"
    no_boot = {"xvector-ce": _model(0.25, 0.20, 0.30), "xvector-dkd": _model(0.15, 0.10, 0.19)}
    assert page.dkd_vs_ce(no_boot, "xvector") == ("lower", "95 % intervals apart")


def test_claims_count_the_runs_they_hold_in():
    def run(teacher, ce, dkd):
        return {"teacher": _model(teacher, 0, 1),
                **{f"{a}-ce": _model(ce, ce - 0.01, ce + 0.01) for a in page.ARCHS},
                **{f"{a}-dkd": _model(dkd, dkd - 0.01, dkd + 0.01) for a in page.ARCHS}}

    lines = page.claim_lines({"main": run(0.10, 0.20, 0.15), "corpus seed 1": run(0.10, 0.20, 0.15),
                              "student seed 1": run(0.10, 0.20, 0.21)})
    assert "- teacher >= 3 points ahead of every CE student: holds in 3 of 3 runs" in lines
    assert ("- DKD below CE for every architecture: holds in 2 of 3 runs (not in: student "
            "seed 1)") in lines
    assert any(line.startswith("- xvector: DKD below CE beyond the noise: within noise")
               for line in lines)
    one = page.claim_lines({"main": run(0.10, 0.20, 0.15)})
    assert any(line.startswith("- campp: DKD below CE beyond the noise: holds in 1 of 1 runs")
               for line in one)


def test_checks_table_lists_every_run_and_counts_only_same_recipes():
    res = {"teacher": _model(0.1, 0, 1),
           **{f"{a}-{loss}": _model(0.2, 0.1, 0.3) for a in page.ARCHS for loss in ("ce", "dkd")}}
    setup = page.setup_id({"speakers": 200, "corpus_seed": 0})
    assert setup == page.setup_id({"speakers": 200, "corpus_seed": 1})  # seeds left out
    checks = {"corpus seed 1": {"setup": page.setup_id({"speakers": 16}), "models": res}}
    rows, counted = page.checks_table(res, checks, setup)
    assert list(counted) == ["main"]
    assert any("| corpus seed 1 | no: recorded with other recipes or sizes |" in r for r in rows)
    assert any("| student seed 1 | not run (`python scripts/demo.py --check student`) |" in r
               for r in rows)
    rows, counted = page.checks_table(res, {"corpus seed 1": {"setup": setup, "models": res}},
                                      setup)
    assert list(counted) == ["main", "corpus seed 1"]


def test_table_gets_params_and_latency_columns():
    table = ("| model | EER (%) | 95 % CI |\n|---|---|---|\n| teacher | 13.99 | 10.0 - 19.0 |\n"
             "| xvector-ce | 18.39 | 13.6 - 23.3 |\n")
    out = page.with_params(table, {"teacher": {"params": 2_500_000, "latency_2s_ms": 41.26},
                                   "xvector-ce": {}})
    assert out.splitlines() == ["| model | params (M) | 2-s latency (ms) | EER (%) | 95 % CI |",
                                "|---|---:|---:|---|---|",
                                "| teacher | 2.50 | 41.3 | 13.99 | 10.0 - 19.0 |",
                                "| xvector-ce | - | - | 18.39 | 13.6 - 23.3 |"]
