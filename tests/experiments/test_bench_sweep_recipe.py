"""scripts/sweep_recipe.py chooses among recipes, so it scores dev trials, never test ones."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from experiments.bench.sweep_recipe import main


def test_a_corpus_without_a_dev_split_is_refused_before_any_training(tmp_path: Path):
    corpus = tmp_path / "root"
    for split in ("train", "test"):
        (corpus / split).mkdir(parents=True)
        (corpus / split / "manifest.jsonl").write_text("")
    out = tmp_path / "sweep.md"
    result = CliRunner().invoke(main, ["--corpus", str(corpus), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "no dev/ split" in result.output and str(corpus) in result.output
    assert not out.exists()
