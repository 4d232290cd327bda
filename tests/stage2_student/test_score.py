"""``python -m stage2_student.score``: stored embeddings scored give exactly the numbers
``stage2_student.evaluate`` gives for the same model and trials; AS-norm with a training
cohort is :func:`speaker.evaluation.scoring.cosine_score`'s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speaker.evaluation.scoring import cosine_score
from speaker.io.manifest import read_trials
from stage2_student import embed, evaluate, score

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def embedded(student_cache, tmp_path: Path, run_cli) -> dict[str, Path]:
    files = {}
    for part in ("test", "train"):
        files[part] = tmp_path / f"{part}.h5"
        result = run_cli(embed.cli, ["--model", student_cache.teacher, "--input",
                                     student_cache.corpus / part, "--out", files[part]])
        assert result.exit_code == 0, result.stderr
    return files


def test_same_numbers_as_evaluate(student_cache, embedded, tmp_path: Path, run_cli) -> None:
    trials = student_cache.corpus / "test" / "trials.txt"
    result = run_cli(score.cli, ["--embeddings", f"teacher={embedded['test']}", "--trials",
                                 trials, "--out", tmp_path / "scored"])
    assert result.exit_code == 0, result.stderr
    result = run_cli(evaluate.cli, ["--data", student_cache.corpus, "--out", tmp_path / "ev",
                                    "--model", f"teacher={student_cache.teacher}"])
    assert result.exit_code == 0, result.stderr
    scored = json.loads((tmp_path / "scored" / "results.json").read_text())
    evaluated = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert scored == evaluated
    assert (tmp_path / "scored" / "results.md").read_text() == \
        (tmp_path / "ev" / "results.md").read_text()


def test_as_norm_with_a_training_cohort(student_cache, embedded, tmp_path: Path,
                                        run_cli) -> None:
    trials_path = student_cache.corpus / "test" / "trials.txt"
    test, train = (embed.read_embeddings(embedded[k]) for k in ("test", "train"))
    result = score.score_file(test, trials_path, train, top_n=3)
    # the cohort: one mean embedding per training speaker; the mean: all training utterances
    speakers = np.array(train.speakers)
    cohort = np.stack([train.matrix[speakers == s].mean(0) for s in sorted(set(speakers))])
    expected = cosine_score(test.as_dict(), read_trials(trials_path),
                            train.matrix.astype(np.float64).mean(0),
                            cohort=cohort, top_n=3)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)
    plain = score.score_file(test, trials_path)
    assert not np.allclose(plain.scores, result.scores)
    out = tmp_path / "asnorm"
    cli = run_cli(score.cli, ["--embeddings", embedded["test"], "--trials", trials_path,
                              "--cohort", embedded["train"], "--top-n", "3", "--out", out])
    assert cli.exit_code == 0, cli.stderr
    assert json.loads((out / "results.json").read_text())["test"]["eer"] == result.eer


def test_not_an_embeddings_file_is_one_line(tmp_path: Path, student_cache, run_cli) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"nope")
    result = run_cli(score.cli, ["--embeddings", bad, "--trials",
                                 student_cache.corpus / "test" / "trials.txt", "--out", tmp_path])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "not an embeddings file" in result.error_lines[0]
