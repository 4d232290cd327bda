"""``python -m stage2_student.embed``: HDF5 layout (one matrix + id index), the evaluate
pipeline's embeddings, resume after a real SIGKILL without recomputing finished chunks,
and one ``error:`` line for unreadable audio and for a model that is not a speaker model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.evaluation.evaluate import extract_embeddings
from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest
from stage2_student import embed

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:.*torch.jit:FutureWarning")]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SLOW = "tests.stage2_student.slow_embedder:build"


def test_file_holds_evaluates_embeddings(student_cache, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "test.h5"
    test = student_cache.corpus / "test"
    result = run_cli(embed.cli, ["--model", student_cache.teacher.parent, "--input", test,
                                 "--out", out, "--chunk", "5"])
    assert result.exit_code == 0, result.stderr
    stored = embed.read_embeddings(out)
    manifest = Manifest.read(test / "manifest.jsonl")
    assert stored.ids == manifest.ids and stored.speakers == [u.speaker for u in manifest]
    assert stored.attrs["condition"] == "full" and not out.with_name("test.h5.parts").exists()
    from speaker.models.checkpoint import load_checkpoint

    direct = extract_embeddings(load_checkpoint(student_cache.teacher).model, manifest,
                                AudioReader(manifest[0].sample_rate))
    assert all(np.array_equal(direct[i], v) for i, v in stored.as_dict().items())


def test_sigkill_then_rerun_embeds_only_the_rest(toy_corpus, tmp_path: Path, run_cli,
                                                 monkeypatch, sigkill_when) -> None:
    out = tmp_path / "emb.h5"
    parts = tmp_path / "emb.h5.parts"
    args = ["--model", SLOW, "--input", str(toy_corpus / "train"), "--out", str(out),
            "--batch-size", "4", "--chunk", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "SLOW_EMBEDDER_SECONDS": "0.3"}
    sigkill_when([sys.executable, "-m", "stage2_student.embed", *args],
                 lambda: bool(list(parts.glob("part-*.npz"))), env, "part")
    assert not out.exists()
    finished = set()
    for p in parts.glob("part-*.npz"):
        with np.load(p) as z:
            finished |= set(z["ids"].tolist())
    ids = Manifest.read(toy_corpus / "train" / "manifest.jsonl").ids
    assert 0 < len(finished) < len(ids)

    embedded: list[str] = []
    real = embed.embed_utterances

    def recording(models, manifest, *a, **k):
        embedded.extend(manifest.ids)
        return real(models, manifest, *a, **k)

    monkeypatch.setattr(embed, "embed_utterances", recording)
    result = run_cli(embed.cli, args)
    assert result.exit_code == 0, result.stderr
    assert not finished & set(embedded) and finished | set(embedded) == set(ids)
    assert not parts.exists()
    again = tmp_path / "again.h5"  # an uninterrupted run gives the same file
    assert run_cli(embed.cli, [*args[:5], str(again), *args[6:]]).exit_code == 0
    a, b = embed.read_embeddings(out), embed.read_embeddings(again)
    assert a.ids == b.ids == ids and np.array_equal(a.matrix, b.matrix)


def test_unreadable_audio_names_the_file(toy_corpus, tmp_path: Path, run_cli) -> None:
    good = sorted((toy_corpus / "test").rglob("*.wav"))[0]
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    wavs = tmp_path / "wavs.txt"
    wavs.write_text(f"{good}\nbroken.wav\n")
    result = run_cli(embed.cli, ["--model", SLOW, "--input", wavs, "--out", tmp_path / "e.h5"])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "broken.wav" in result.error_lines[0] and "Traceback" not in result.stderr


def test_not_a_speaker_model_is_refused(toy_corpus, tmp_path: Path, run_cli) -> None:
    identity = tmp_path / "identity.ts"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(identity))
    result = run_cli(embed.cli, ["--model", identity, "--input", toy_corpus / "test",
                                 "--out", tmp_path / "e.h5"])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "not a speaker embedding model" in result.error_lines[0]
    assert not (tmp_path / "e.h5").exists()


def test_help_has_examples(run_cli) -> None:
    result = run_cli(embed.cli, ["-h"])
    assert result.exit_code == 0 and "Example" in result.stdout
