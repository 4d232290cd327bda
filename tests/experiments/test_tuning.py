"""scripts/tune.py (experiments.tuning): the grid, the rule, the hour budget of the full grid,
and the --quick grid end to end on a demo-like folder whose corpus has no test split at all
(so scoring the test trials would fail): every model scored on dev, the choices written where
experiments/recipes.py reads them, a rerun redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.recipes import BASE, load_tuning, recipes
from experiments.runs import Layout
from experiments.tuning.cli import planned_inputs, print_plan
from experiments.tuning.grid import FULL, QUICK, SEEDS, cell_name, runs
from experiments.tuning.report import choose

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "tune.py"


def test_full_grid_fits_an_hour_on_two_cores(tmp_path: Path, capsys):
    inputs = planned_inputs(tmp_path, quick=False)
    all_runs = runs(FULL, inputs, tmp_path / "runs")
    minutes = print_plan(FULL, all_runs, Layout(tmp_path, tmp_path), 2, inputs, build=False)
    assert 60 < minutes <= 100, capsys.readouterr().out
    assert len(SEEDS) >= 2 and len({r.name for r in all_runs}) == len(all_runs)
    # every tunable setting is in the grid or said not to be
    from experiments.tuning.grid import NOT_TUNED
    tuned = {k for s in FULL for k in s.keys}
    assert tuned | (set(NOT_TUNED) & set(BASE)) == set(BASE) and not tuned & set(NOT_TUNED)
    assert [k for k in NOT_TUNED if k not in BASE] == [
        "teacher optimizer and batch (--preset demo-teacher)"]
    for s in FULL:
        assert s.prefer in s.values and tuple(BASE[k] for k in s.keys) in s.values
    for run in all_runs:  # training gets no dev or test split: nothing scored in training
        assert not {"--data", "--dev", "--test", "--trials"} & set(run.argv)
    teachers = [r for r in all_runs if r.kind == "teacher"]
    assert sorted(r.argv[r.argv.index("--lr") + 1] for r in teachers) == \
        ["0.001", "0.001", "0.003", "0.003", "0.01", "0.01"]
    assert all(r.argv[:2] == ["-m", "stage1_teacher.train"] and r.heavy for r in teachers)


def test_a_cell_is_base_with_one_setting_changed(tmp_path: Path):
    beta = next(s for s in FULL if s.keys == ("dkd.beta", "dkd.temperature"))
    assert cell_name(beta, (2.0, 1.0)) == "xvector-dkd-base"
    assert cell_name(beta, (8.0, 4.0)) == "xvector-dkd-beta8-T4"
    run = {r.name: r for r in runs(FULL, planned_inputs(tmp_path, False), tmp_path)}
    flags = run["xvector-dkd-beta8-T4-s1"].argv
    flag = dict(zip(flags, flags[1:], strict=False))
    assert (flag["--beta"], flag["--temperature"], flag["--seed"]) == ("8", "4", "1")
    assert flag["--lr"] == "0.003" and flag["--batch-size"] == "64"


def test_rule_lowest_mean_with_ties_to_the_preferred_value():
    lr = FULL[0]  # xvector.lr: 1e-3, 3e-3 (preferred), 1e-2
    assert choose(lr, {(1e-3,): 0.30, (3e-3,): 0.21, (1e-2,): 0.19}) == (1e-2,)
    assert choose(lr, {(1e-3,): 0.30, (3e-3,): 0.195, (1e-2,): 0.19}) == (3e-3,)  # tie
    # a tie that leaves the preferred value out goes to the lowest mean
    assert choose(lr, {(1e-3,): 0.191, (3e-3,): 0.25, (1e-2,): 0.19}) == (1e-2,)


def test_recipes_read_the_chosen_values(tmp_path: Path):
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps({"written": "2026-12-03 10:00 UTC", "grid": "full", "seeds": 2,
                                "chosen": {"resnet34.lr": 0.003, "dkd.beta": 8.0}}))
    tuning = load_tuning(path)
    assert tuning.tuned == ("dkd.beta", "resnet34.lr")
    assert "chosen on the dev split" in tuning.source and "campp.lr" in tuning.source
    assert recipes(tuning.settings)["resnet34"].optimizer[-3:] == ("0.003", "--final-lr", "0.003")
    assert "not tuned on dev" in load_tuning(tmp_path / "absent.json").source
    path.write_text(json.dumps({"written": "", "grid": "", "seeds": 2,
                                "chosen": {"no.such": 1}}))
    with pytest.raises(ValueError, match="no.such"):
        load_tuning(path)


def demo_folder(student_cache, root: Path) -> Path:
    """A finished demo's folder on the shared test cache, its corpus without test/."""
    demo = root / "demo"
    (demo / "toy").mkdir(parents=True)
    for part in ("train", "dev", "musan", "rirs"):
        if (student_cache.corpus / part).exists():
            (demo / "toy" / part).symlink_to(student_cache.corpus / part)
    (demo / "logits.zarr").symlink_to(student_cache.cache)
    (demo / "verify.txt").write_text("verified\n")
    (demo / "demo.json").write_text(json.dumps({"student_epochs": [["xvector", 6]]}))
    return demo


def tune(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_quick_tuning_scores_dev_only_and_resumes(student_cache, tmp_path: Path):
    demo, out = demo_folder(student_cache, tmp_path), tmp_path / "tune"
    first = tune("--quick", "--from-demo", demo, "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads((out / "tuning.json").read_text())
    assert saved["split"] == "dev" and saved["grid"] == "quick" and saved["seeds"] == 2
    assert set(saved["chosen"]) == {k for s in QUICK for k in s.keys}
    dev_trials = (student_cache.corpus / "dev" / "trials.txt").read_text().split("\n")
    assert saved["inputs"]["dev_trials"] == len([t for t in dev_trials if t.strip()])
    for setting in saved["settings"]:
        for value in setting["values"]:
            assert len(value["dev_eer"]) == 2 and all(0 <= e <= 1 for e in value["dev_eer"])
    evals = list((out / "eval").glob("*/log.txt"))
    assert evals and all("Traceback" not in e.read_text() for e in evals)
    models = sorted(out.glob("runs/*/model.pt"))
    assert len(models) == 8  # 4 cells (ce and dkd, each at BASE and changed) x 2 seeds
    page = (out / "tuning.md").read_text()
    assert "--split dev" in page and "**chosen**" in page and str(tmp_path) not in page
    assert load_tuning(out / "tuning.json").tuned == tuple(sorted(saved["chosen"]))

    stamps = {p: p.stat().st_mtime_ns for p in models}
    again = tune("--quick", "--from-demo", demo, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in models} == stamps
    assert "evaluating" not in again.stderr  # nothing retrained or rescored


def test_refusals_before_anything_runs(student_cache, tmp_path: Path):
    demo, out = demo_folder(student_cache, tmp_path), tmp_path / "tune"
    refused = tune("--quick", "--from-demo", demo, "--out", out, "--publish-docs")
    assert refused.returncode == 2 and "--publish-docs" in refused.stderr
    (demo / "toy" / "dev").unlink()
    no_dev = tune("--from-demo", demo, "--out", out)
    assert no_dev.returncode == 2 and "no dev split" in no_dev.stderr
    assert not out.exists()
