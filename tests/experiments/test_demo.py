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
    assert table.rstrip("\n") in written and "![DET curves](demo_det.png)" in written
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
        if loss == "dkd":
            assert (flag["--alpha"], flag["--beta"], flag["--temperature"]) == ("1", "2", "1")
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


def test_dkd_vs_ce_is_beyond_noise_only_when_the_intervals_are_apart():
    def model(low, high):
        return {"eer": (low + high) / 2, "eer_ci95_low": low, "eer_ci95_high": high}

    results = {"teacher": model(0.05, 0.10),
               "xvector-ce": model(0.20, 0.30), "xvector-dkd": model(0.10, 0.19),  # apart
               "campp-ce": model(0.20, 0.30), "campp-dkd": model(0.15, 0.21)}  # overlapping
    assert page.dkd_vs_ce_noise(results) == (
        "DKD vs CE beyond the noise (95 % intervals apart): xvector; within noise: campp")


def test_the_page_is_written_in_out_with_relative_paths_and_published_only_on_request(
        tmp_path: Path, monkeypatch):
    def model(eer):
        return {"eer": eer, "eer_ci95_low": eer - 0.01, "eer_ci95_high": eer + 0.01}

    out, docs = tmp_path / "demo", tmp_path / "docs"
    (out / "results").mkdir(parents=True)
    docs.mkdir()
    results = {"teacher": model(0.10), **{f"{a}-{loss}": model(0.2 if loss == "ce" else 0.15)
                                          for a in page.ARCHS for loss in ("ce", "dkd")}}
    (out / "results" / "results.json").write_text(json.dumps(results))
    (out / "results" / "det.png").write_bytes(b"png")
    (out / "demo.json").write_text(json.dumps({"corpus_seed": 0, "student_seed": 0}))
    monkeypatch.setattr(page, "DOCS", docs)
    times = {"corpus": {"wall_s": 1.0, "cpu_s": 1.0}, "student xvector-ce": {"wall_s": 2.0}}
    written = page.write_page(out, SIZES["full"], "| table |\n", times, "0.1, 0.2, 0.3")
    text = written.read_text()
    assert written == out / "demo.md" and (out / "demo_det.png").read_bytes() == b"png"
    assert str(tmp_path) not in text and "](demo_det.png)" in text and "| table |" in text
    assert "Not checked yet" in text and not list(docs.iterdir())
    assert page.publish(out) == [docs / "demo.md", docs / "demo_det.png"]
    assert (docs / "demo.md").read_text() == text


def test_publish_docs_is_refused_for_a_quick_run(tmp_path: Path):
    bad = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "d"), "--quick",
                          "--publish-docs"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--publish-docs" in bad.stderr
    assert not (tmp_path / "d").exists()
