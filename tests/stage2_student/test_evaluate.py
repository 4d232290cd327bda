"""``python -m stage2_student.evaluate``: several models (checkpoints, ``speechbrain:DIR``,
``wespeaker:DIR``) scored on one trial list -> results.json, results.md and one DET plot;
bad --model arguments as one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stage2_student.evaluate import cli

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def final_eer(run_dir: Path) -> float:
    return json.loads((run_dir / "results.json").read_text())["final"]["eer"]


def test_report_for_a_teacher_and_a_student(student_cache, student_run, tmp_path: Path,
                                            run_cli):
    out = tmp_path / "eval"
    result = run_cli(cli, ["--data", student_cache.corpus, "--out", out,
                           "--model", student_cache.teacher,  # named after its directory
                           "--model", f"xvector-dkd={student_run.out / 'model.pt'}"])
    assert result.exit_code == 0, result.stderr
    summaries = json.loads((out / "results.json").read_text())
    assert list(summaries) == ["teacher", "xvector-dkd"]
    for s in summaries.values():
        assert set(s) == {"eer", "eer_ci95_low", "eer_ci95_high", "min_dcf_0.01",
                          "min_dcf_0.05"}
        assert all(0.0 <= v <= 1.0 for v in s.values())
        assert s["eer_ci95_low"] <= s["eer_ci95_high"]

    table = (out / "results.md").read_text()
    assert result.stdout == table
    lines = table.splitlines()
    assert lines[0].startswith("| model | EER (%)") and len(lines) == 4
    assert lines[2].startswith("| teacher | ") and lines[3].startswith("| xvector-dkd | ")
    assert f"{100 * summaries['teacher']['eer']:.2f}" in lines[2]
    png = (out / "det.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 5000


@pytest.mark.parametrize("models, words", [
    (["{teacher}", "{teacher}"], ["'teacher'", "twice"]),
    (["a={missing}"], ["no such checkpoint file"]),
])
def test_bad_model_arguments(models, words, student_cache, tmp_path: Path, run_cli):
    out = tmp_path / "eval"
    args = ["--data", student_cache.corpus, "--out", out]
    for m in models:
        args += ["--model", m.format(teacher=student_cache.teacher, missing=tmp_path / "no.pt")]
    result = run_cli(cli, args)
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.error_lines[0], result.error_lines[0]
    assert not out.exists()


def _teacher_test_module(name: str):
    """A helper module of tests/speaker/teachers (its fixture writers), loaded by path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "speaker" / "teachers" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_entkd_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrained_teachers_are_scored(toy_corpus: Path, tmp_path: Path, run_cli):
    """``speechbrain:DIR`` and ``wespeaker:DIR`` with the random-weight fixtures of the
    teacher tests; wespeaker's EER is that of the entkd model its files were written from."""
    import torch

    from speaker.evaluation.evaluate import evaluate_model
    from speaker.io.audio import AudioReader
    from speaker.io.paths import DataPaths
    from speaker.models import build
    from speaker.models.heads import AAMSoftmax

    we = _teacher_test_module("test_wespeaker")
    torch.manual_seed(0)
    model = build("resnet34", base_width=4, embed_dim=16).eval()
    we.randomize_norms(model, 5)
    head = AAMSoftmax(16, 3, scale=32.0, margin=0.2)
    we_dir = we.write_wespeaker(tmp_path / "r34", "ResNet34",
                                {"feat_dim": 80, "embed_dim": 16, "pooling_func": "TSTP"},
                                we.wespeaker_resnet_keys(model.state_dict(), (3, 4, 6, 3)), head)
    models = ["--model", f"we=wespeaker:{we_dir}"]
    sb = _teacher_test_module("test_speechbrain") if _has_speechbrain() else None
    if sb is not None:
        sb_dir = sb.make_speechbrain_dir(tmp_path / "sb", ["a", "b"])
        models += ["--model", f"sb=speechbrain:{sb_dir}"]
    out = tmp_path / "eval"
    result = run_cli(cli, ["--data", toy_corpus, "--out", out, *models])
    assert result.exit_code == 0, result.stderr
    summaries = json.loads((out / "results.json").read_text())
    assert set(summaries) == {"we", "sb"} if sb is not None else {"we"}
    assert all(0.0 <= v <= 1.0 for s in summaries.values() for v in s.values())
    manifest, trials = DataPaths(data=toy_corpus).test_set()
    direct = evaluate_model(we.wespeaker_eps(model), manifest, trials, AudioReader(16000))
    assert summaries["we"]["eer"] == direct.eer


def _has_speechbrain() -> bool:
    import importlib.util

    return importlib.util.find_spec("speechbrain") is not None
