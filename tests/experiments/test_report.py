"""The report of make results (experiments.report) on synthetic result files: the one verdict
rule (different / equivalent by TOST / not shown equivalent) in points, the per-student
decoupling answer, the JSON summary's keys, and a page written with runs missing."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from experiments.evaluation import N_BOOT
from experiments.recipes import CHOSEN, PLACEHOLDER, RECIPES, kd_control, loss_flags
from experiments.report import write_report
from experiments.report.stats import MARGIN, compare, judge
from experiments.results.plan import SHORT, SIZES, Options, Plan, student_losses
from experiments.runs import Layout, Run, write_json

SPEAKER_EFFECT = np.random.default_rng(0).normal(0, 0.01, N_BOOT)  # shared by every model


def _model(eer: float, seed: int, noise: float = 0.001) -> dict:
    rng = np.random.default_rng(int(eer * 1e6) + 7 * seed)
    boot = eer + SPEAKER_EFFECT + rng.normal(0, noise, N_BOOT)
    return {"eer": eer, "eer_boot": list(boot), "n_boot": N_BOOT, "meta": {"seed": seed},
            "min_dcf_0.05": 0.9, "min_dcf_0.01": 0.99, "eer_ci95": [eer - 0.02, eer + 0.02],
            "trials": 100, "target_trials": 50, "test_speakers": 8}


def test_verdicts_are_in_points_with_seeds_paired_by_number():
    same = [_model(0.15, s) for s in range(3)]
    shifted = [_model(0.15 + 0.001 * s, s) for s in range(3)]
    lower = [_model(0.12, s) for s in range(3)]
    d = compare(shifted, same)
    assert d.diff == pytest.approx(0.1) and d.paired  # points
    assert judge(d, "a", "b") == "equivalent"  # inside +-MARGIN
    assert judge(compare(lower, same), "kd", "dkd") == "different (kd lower)"
    assert judge(compare(same, lower), "kd", "dkd") == "different (dkd lower)"
    wide = [_model(0.15 + 0.01 * s, s, noise=0.02) for s in range(3)]
    assert judge(compare(wide, same), "a", "b") == "not shown equivalent"
    assert not compare(same[:2], same[1:]).paired  # other seeds: unpaired
    assert compare([], same) is None and judge(None, "a", "b") == "not run"
    other = [{**r, "eer_boot": r["eer_boot"][:200]} for r in same]
    assert compare(other, same) is None  # other replicates: not compared
    assert MARGIN == 0.5


def _base_eer(run: Run) -> float:
    """A synthetic world: DKD beats KD by decoupling on the x-vector only; the cache is
    equivalent to online fresh views; more speakers help; at the chosen DKD setting a sampled
    tail is one point below the exact bucket and equal to online full logits."""
    m = run.meta
    loss, arch = m.get("loss"), m.get("arch")
    eer = {"ce": 0.22, "emb": 0.18, "kd": 0.17, "kd-w3": 0.16, "dkd": 0.15}.get(loss, 0.14)
    if arch != "xvector" and loss == "dkd":
        eer = 0.16  # = kd-w3: decoupling adds nothing
    if loss == kd_control(CHOSEN["dkd"]).tag:
        eer = 0.16 if arch == "xvector" else 0.14
    if m.get("fresh_views"):
        eer = 0.15
    if loss == CHOSEN["dkd"].tag and (m.get("tail") == "sampled" or m.get("online")):
        eer = 0.13
    if "-spk" in run.name:
        eer += 0.05 * (1 - m["train_share"])
    return eer


def _write_synthetic(plan: Plan, layout: Layout, skip: set[str]) -> None:
    for run in plan.runs:
        if run.name in skip:
            continue
        res = {"name": run.name, "kind": run.kind, "meta": run.meta, "wall_s": 100.0,
               "resumed": False, "command": ["python"], "teacher_sha256": "t"}
        if run.kind in ("teacher", "student"):
            res.update(_model(_base_eer(run), run.meta.get("seed", 0)), meta=run.meta,
                       wall_s=400.0 if run.meta.get("online") else 100.0,
                       wall_s_per_epoch=25.0)
        elif run.kind == "dump":
            res.update(rows=64, k=8, classes=16, stored_bytes=10_000, soft_label_bytes=1_000,
                       stats={"rows": 64, "target_prob_hist": [1, 2, 3], "bin_edges": [0, .5,
                              .9, 1], "target_prob_median": 0.4, "kept_mass_mean": [0.5] * 8})
        elif run.kind == "subset":
            res.update(utterances=32, speakers=round(16 * run.meta["share"]))
        elif run.kind == "measure":
            res["measured"] = {"paper_forward_s_per_crop": 0.3, "teacher_forward_s_per_crop":
                               0.007, "student_step_s_per_crop": 0.004, "paper_params_m": 324.0,
                               "paper_over_student": 75.0, "settings": {"batch": 4, "threads": 2,
                                                                        "paper_opt": []}}
        elif run.kind == "corpus":
            res["corpus"] = {"speakers": 16}
        write_json(layout.result_path(run.name), res)


def _report(tmp_path: Path, skip: set[str] = frozenset()) -> tuple[dict, str]:
    opts = Options.__new__(Options)
    opts.kd_weight = True
    size = replace(SIZES["quick"], seeds=3)
    plan = Plan(size, None, tmp_path / "out", opts)
    runs = plan.build()
    layout = Layout(tmp_path / "out", tmp_path / "results", n_boot=N_BOOT)
    _write_synthetic(plan, layout, skip)
    dkd = CHOSEN["dkd"]
    settings = {"size": "quick", **asdict(size), "data": "synthetic", "lanes": 2,
                "students": {a: asdict(r) for a, r in RECIPES.items()}, "losses": loss_flags(),
                "student_losses": student_losses(), "short": SHORT,
                "chosen": {role: c and asdict(c) for role, c in CHOSEN.items()},
                "kd_control": kd_control(dkd).tag}
    page = tmp_path / "RESULTS.md"
    summary = write_report(runs, layout, settings, page)
    text = page.read_text()
    assert json.loads(text.splitlines()[-1]) == summary  # the page's last line
    return summary, text


def test_report_verdicts_and_summary_keys_on_synthetic_results(tmp_path: Path):
    summary, text = _report(tmp_path)
    assert summary["cached_online_fresh_verdict"] == "equivalent"
    assert summary["cached_minus_online_fresh_eer"] == pytest.approx(-1.0, abs=1.01)
    assert summary["cached_not_worse_than_online_fresh"] is True
    cells = len(SIZES["quick"].views_grid) * len(SIZES["quick"].length_factors)
    assert f"cached shown not worse by 0.5 points in {cells} of {cells} cells" in text
    assert summary["equivalence_margin_eer"] == MARGIN
    assert set(summary["dkd_minus_kdw3_eer"]) == {"xvector", "resnet34", "campp"}
    assert summary["dkd_minus_kdw3_eer"]["xvector"] == pytest.approx(-1.0)
    assert summary["dkd_minus_kdw3_eer"]["resnet34"] == pytest.approx(0.0)
    assert set(summary["dkd_rel_gain_over_emb_kd_pct"]) == {"xvector", "resnet34", "campp"}
    assert summary["dump_plus_3_over_3_online_measured"] == pytest.approx(
        (100 + 3 * 100) / (3 * 400), abs=1e-3)
    assert summary["projected_dump_plus_3_over_3_online_wavlm_large"] > 0
    assert summary["projected_wavlm_large_forward_over_student_step"] == 75.0
    assert summary["more_speakers_claim"] == "different (more speakers lower)"
    assert summary["tail_sampled_minus_exact_eer"] == pytest.approx(-1.0)
    assert summary["tail_sampled_minus_online_eer"] == pytest.approx(0.0)
    assert summary["tail_exact_minus_online_eer"] == pytest.approx(1.0)
    tail_rows = [line for line in text.splitlines() if line.startswith("| top-32 ")]
    assert len(tail_rows) == 2 and " | 3 | 14.00 ± 0.00 | +1.00 " in tail_rows[0]
    assert tail_rows[0].endswith("| different (online lower) |")
    assert tail_rows[1].endswith("| equivalent |")
    assert "- sampled tail − exact bucket: -1.00 points" in text
    # x-vector: dkd below both KD controls; ResNet34: the controls match dkd
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith("| ") and line.rstrip().endswith(("| yes |", "| **no** |"))}
    assert rows["xvector"].endswith("| yes |") and rows["resnet34"].endswith("| **no** |")
    assert "within noise" not in text and "minDCF 0.01" not in text
    # the placeholder notes appear exactly when docs/tuning.json has not chosen the setting
    placeholders = any(c is not None and c.source == PLACEHOLDER for c in CHOSEN.values())
    assert ("to be replaced by dev tuning" in text) == placeholders
    assert ("dev-tuned: no setting chosen yet" in text) == (CHOSEN["dualgroup"] is None)


def test_report_only_writes_not_run_for_missing_runs(tmp_path: Path):
    skip = {"costs", "xv-dkd-half-fresh-x3-s0", "xv-dkd-half-fresh-x3-s1",
            "xv-dkd-half-fresh-x3-s2", "teacher", "subset-spk50-all"}
    summary, text = _report(tmp_path, skip)
    assert summary["cached_minus_online_fresh_eer"] is None
    assert summary["cached_online_fresh_verdict"] == "not run"
    assert summary["cached_not_worse_than_online_fresh"] is None
    assert summary["projected_dump_plus_3_over_3_online_wavlm_large"] is None
    assert summary["dump_plus_3_over_3_online_measured"] is not None  # measured without it
    assert "Not run yet (needs `costs`)" in text and "Teacher: EER nan % (not run)" in text


def test_tuning_note_names_placeholders_until_dev_tuning_chose_them():
    from experiments.recipes import BASE, Tuning, chosen_settings
    from experiments.report.header import tuning_note

    untuned = chosen_settings(Tuning(dict(BASE), (), "not tuned"))
    note = tuning_note({role: c and asdict(c) for role, c in untuned.items()})
    assert PLACEHOLDER in note and "(dkd, trkd)" in note
    tuned = chosen_settings(Tuning(dict(BASE), tuple(BASE), "tuned"))
    note = tuning_note({role: c and asdict(c) for role, c in tuned.items()})
    assert PLACEHOLDER not in note and "never used to choose a setting" in note


def test_operating_point_note_calls_min_dcf_saturated_only_when_every_student_is():
    from experiments.report.header import SATURATED_DCF, operating_point_note

    assert "is saturated" in operating_point_note([0.99, SATURATED_DCF, 1.0])
    assert "0.95-1.00 over 3 students" in operating_point_note([0.99, SATURATED_DCF, 1.0])
    note = operating_point_note([0.99, 0.62])
    assert "saturated" not in note and "ranges 0.62-0.99 over 2 students" in note
    assert "no student evaluated yet" in operating_point_note([])


def test_seed_spread_note_is_the_median_std_over_recipes_with_two_seeds():
    from experiments.report.header import seed_spread_note

    def student(eer):
        return {"kind": "student", "eer": eer}

    res = {"a-s0": student(0.10), "a-s1": student(0.12), "a-s2": student(0.14),  # std 2
           "b-s0": student(0.20), "b-s1": student(0.21),  # std 0.707
           "c-s0": student(0.30),  # one seed: no std
           "d-s0": student(0.10), "d-s1": student(0.16),  # std 4.24
           "teacher": {"kind": "teacher", "eer": 0.5}, "e-s1": None}
    assert seed_spread_note(res) == "measured here: median seed std 2.00 points over 3 recipes"
    assert seed_spread_note({"c-s0": student(0.3)}) == "no recipe has two seeds yet"
