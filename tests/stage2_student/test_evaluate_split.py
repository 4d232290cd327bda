"""Choosing on dev, reporting on test: ``stage2_student.evaluate --split dev`` scores the dev
trials, and the trainers' own evaluation is on the dev split whenever the data has one (so a
training run never scores the test trials)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speaker.io.paths import DataPaths
from stage2_student.evaluate import cli, evaluate_specs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def trial_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_split_dev_scores_the_dev_trials(student_cache, student_run, tmp_path: Path, run_cli):
    corpus = student_cache.corpus
    models = {"teacher": student_cache.teacher, "xvector-dkd": student_run.out / "model.pt"}
    data = DataPaths(data=corpus)
    specs = {name: str(path) for name, path in models.items()}
    dev = evaluate_specs(specs, data, split="dev")
    test = evaluate_specs(specs, data)  # the default: test
    for name in models:
        assert dev[name].labels.size == trial_lines(corpus / "dev" / "trials.txt")
        assert test[name].labels.size == trial_lines(corpus / "test" / "trials.txt")
        dev_speakers = set(dev[name].speakers[0]) | set(dev[name].speakers[1])
        assert all(s.startswith("id8") for s in dev_speakers)  # dev speakers: id80000..

    out = tmp_path / "eval"
    result = run_cli(cli, ["--data", corpus, "--out", out, "--split", "dev",
                           *[a for n, p in models.items() for a in ("--model", f"{n}={p}")]])
    assert result.exit_code == 0, result.stderr
    summaries = json.loads((out / "results.json").read_text())
    assert summaries["teacher"]["eer"] == dev["teacher"].eer
    # the trainers evaluated themselves on the dev split: the same embeddings and scores
    for name, run_dir in (("teacher", student_cache.teacher.parent),
                          ("xvector-dkd", student_run.out)):
        results = run_results(run_dir)
        assert results["eval_split"] == "dev"
        assert summaries[name]["eer"] == results["final"]["eer"]


def test_unknown_split_is_a_usage_error(student_cache, tmp_path: Path, run_cli):
    result = run_cli(cli, ["--data", student_cache.corpus, "--out", tmp_path / "e",
                           "--split", "train", "--model", student_cache.teacher])
    assert result.exit_code == 2 and "--split" in result.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("module", ["stage1_teacher.train", "stage2_student.train"])
def test_trainers_help_says_they_never_score_test_with_a_dev_split(module, run_cli):
    import importlib

    result = run_cli(importlib.import_module(module).cli, ["--help"])
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "never scores the test trials" in text
