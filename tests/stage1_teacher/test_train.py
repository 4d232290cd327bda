"""Teacher training CLI: exact resume (also after SIGKILL), refusing to clobber or to resume
with other settings, bad input as one error line, short audio, and a torchrun run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from speaker.io.manifest import Manifest, Utterance
from speaker.models.checkpoint import load_checkpoint
from speaker.training.trainer import Trainer, scaled_schedule
from stage1_teacher.train import PRESETS, ce_step, cli, resolve_config

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3  # the demo preset evaluates every 2 epochs and after the last: epochs 2 and 3

# The smallest teacher run that still exercises every part of training: 32 crops of 0.5 s
# -> 4 steps of 8 per epoch, augmentation from the toy noise bank, evaluation on 48 trials.
TINY_TRAIN = [
    "--arch", "xvector",
    "--arch-opt", "channels=32",
    "--arch-opt", "embed_dim=32",
    "--batch-size", "8",
    "--crop-seconds", "0.5",
    "--workers", "0",
]


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--epochs", str(EPOCHS), *TINY_TRAIN, *extra]


def history(path: Path) -> list[dict]:
    return load_checkpoint(path).state["history"]


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.fixture(scope="module")
def reference(toy_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the tiny command (in-process); its directory, read-only."""
    out = tmp_path_factory.mktemp("reference") / "run"
    cli.main(tiny_args(toy_corpus, out), standalone_mode=False)
    return out


def copy_run(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


class Killed(Exception):
    """Stands in for a kill right after a checkpoint was written."""


def test_reference_run_is_complete(reference: Path):
    ckpt = load_checkpoint(reference / "model.pt")
    assert ckpt.state["epoch"] == EPOCHS
    results = json.loads((reference / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert "eer" not in results["history"][0] and "eer" in results["history"][1]
    assert 0.0 <= results["final"]["eer"] <= 1.0
    config = json.loads((reference / "config.json").read_text())
    assert config["epochs"] == EPOCHS and config["arch_kwargs"] == {"channels": 32, "embed_dim": 32}
    assert Path(config["data"]["data"]).is_absolute()


def test_interrupted_run_resumes_bit_identically(
    toy_corpus: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli,
    assert_same_weights,
):
    out = tmp_path / "run"
    save = Trainer._save

    def save_then_die(self: Trainer, epochs_done: int) -> None:
        save(self, epochs_done)
        if epochs_done == 1:
            raise Killed

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(Killed):
        cli.main(tiny_args(toy_corpus, out), standalone_mode=False)
    monkeypatch.undo()
    assert load_checkpoint(out / "model.pt").state["epoch"] == 1
    assert not (out / "results.json").exists()

    # the same command without --resume must not touch the interrupted run
    before = snapshot(out)
    result = run_cli(cli, tiny_args(toy_corpus, out))
    assert result.exit_code == 2
    assert len(result.error_lines) == 1 and "--resume" in result.error_lines[0]
    assert "Traceback" not in result.stderr
    assert snapshot(out) == before

    result = run_cli(cli, tiny_args(toy_corpus, out, "--resume"))
    assert result.exit_code == 0, result.stderr
    assert_same_weights(out / "model.pt", reference / "model.pt")
    assert history(out / "model.pt") == history(reference / "model.pt")
    assert json.loads((out / "results.json").read_text()) == json.loads(
        (reference / "results.json").read_text()
    )


def test_resume_refuses_other_settings(toy_corpus: Path, reference: Path, tmp_path: Path,
                                       run_cli):
    """The LR schedule spans --epochs, so resuming with another value (or any other
    setting that changes the result) would not reproduce an uninterrupted run."""
    out = copy_run(reference, tmp_path)
    before = snapshot(out)
    for extra, named in [
        (["--epochs", "4"], "epochs: 3 -> 4"),
        (["--lr", "0.05"], "schedule.lr"),
        (["--arch-opt", "channels=48"], "arch_kwargs.channels"),
    ]:
        result = run_cli(cli, tiny_args(toy_corpus, out, "--resume", *extra))
        assert result.exit_code == 2, (extra, result.stderr)
        assert len(result.error_lines) == 1 and named in result.error_lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert snapshot(out) == before


def test_resume_of_finished_run_allows_other_workers(toy_corpus: Path, reference: Path,
                                                     tmp_path: Path, run_cli,
                                                     assert_same_weights):
    out = copy_run(reference, tmp_path)
    result = run_cli(cli, [*tiny_args(toy_corpus, out, "--resume"), "--workers", "1"])
    assert result.exit_code == 0, result.stderr
    assert_same_weights(out / "model.pt", reference / "model.pt")
    assert json.loads((out / "results.json").read_text()) == json.loads(
        (reference / "results.json").read_text()
    )


def test_sigkilled_run_resumes_bit_identically(toy_corpus: Path, reference: Path,
                                               tmp_path: Path, sigkill_once_checkpointed,
                                               assert_same_weights):
    """A real ``python -m stage1_teacher.train`` killed with SIGKILL once its first
    checkpoint exists, then the same command with --resume."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "stage1_teacher.train", *tiny_args(toy_corpus, out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed_at = sigkill_once_checkpointed(command, out, env)
    assert 1 <= killed_at < EPOCHS, "the run finished before it could be killed"
    assert not (out / "results.json").exists()

    done = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed {out / 'model.pt'} after epoch {killed_at}" in done.stderr
    assert_same_weights(out / "model.pt", reference / "model.pt")
    assert history(out / "model.pt") == history(reference / "model.pt")


# ---- bad input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_manifests(toy_corpus: Path) -> tuple[Manifest, Manifest]:
    """Train and test manifests of the toy corpus with absolute paths (safe to rewrite)."""
    return (Manifest.read(toy_corpus / "train" / "manifest.jsonl"),
            Manifest.read(toy_corpus / "test" / "manifest.jsonl"))


def write_manifest(path: Path, utts: list[Utterance]) -> Path:
    # written by hand so that duplicates can be written too
    path.write_text("".join(json.dumps(u.to_dict()) + "\n" for u in utts))
    return path


def train_args(train: Path, out: Path, *extra: str, test: Path | None = None,
               trials: Path | None = None) -> list[str]:
    """One epoch on ``train``, no noise bank; the options after it win (click: last wins)."""
    args = ["--train", str(train), "--out", str(out), "--epochs", "1", *TINY_TRAIN]
    if test is not None:
        args += ["--test", str(test), "--trials", str(trials)]
    return [*args, *extra]


def assert_one_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.error_lines[0], result.error_lines[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def test_missing_audio_file(toy_manifests, tmp_path: Path, run_cli):
    train, _ = toy_manifests
    gone = tmp_path / "gone.wav"
    utts = [*train][:-1] + [Utterance("x/y/gone.wav", train[-1].speaker, str(gone), 16000, 16000)]
    result = run_cli(cli, train_args(write_manifest(tmp_path / "m.jsonl", utts), tmp_path / "out"))
    assert_one_error(result, str(gone), "does not exist")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_audio_file(toy_manifests, tmp_path: Path, run_cli, workers: str):
    """Found only when read (inside a DataLoader worker with --workers 1): still one line,
    and no checkpoint or results appear."""
    train, _ = toy_manifests
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 50)
    utts = [*train, Utterance("x/y/bad.wav", train[0].speaker, str(bad), 16000, 16000)]
    out = tmp_path / "out"
    # 33 crops in batches of 11: no crop is left out by drop_last
    result = run_cli(cli, train_args(write_manifest(tmp_path / "m.jsonl", utts), out,
                                     "--workers", workers, "--batch-size", "11"))
    assert_one_error(result, "cannot read audio", str(bad))
    assert "DataLoader" not in result.stderr
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()


def test_trial_with_unknown_utterance(toy_corpus: Path, toy_manifests, tmp_path: Path, run_cli):
    train, test = toy_manifests
    trials = tmp_path / "trials.txt"
    lines = (toy_corpus / "test" / "trials.txt").read_text().splitlines()
    trials.write_text("\n".join([*lines[:3], f"1 {test[0].id} id99999/nope/00001.wav", *lines[3:]]))
    result = run_cli(cli, train_args(toy_corpus / "train" / "manifest.jsonl", tmp_path / "out",
                                     test=toy_corpus / "test" / "manifest.jsonl", trials=trials))
    assert_one_error(result, f"{trials}:4", "id99999/nope/00001.wav")
    assert_nothing_written(tmp_path / "out")


def test_duplicate_utterance_id(toy_manifests, tmp_path: Path, run_cli):
    train, _ = toy_manifests
    manifest = write_manifest(tmp_path / "m.jsonl", [*train, train[5]])
    result = run_cli(cli, train_args(manifest, tmp_path / "out"))
    assert_one_error(result, "duplicate utterance id", repr(train[5].id), str(manifest))
    assert_nothing_written(tmp_path / "out")


def test_mixed_sample_rates(toy_manifests, tmp_path: Path, run_cli):
    train, _ = toy_manifests
    u = train[3]
    odd = Utterance(u.id, u.speaker, u.path, u.num_samples // 2, 8000)
    manifest = write_manifest(tmp_path / "m.jsonl", [*train[:3], odd, *train[4:]])
    result = run_cli(cli, train_args(manifest, tmp_path / "out"))
    assert_one_error(result, repr(u.id), "8000 Hz")
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--batch-size", "64"], ["--batch-size 64", "32 views"]),
        (["--arch", "nosuchnet"], ["unknown architecture 'nosuchnet'"]),
        (["--arch-opt", "nosuch=1"], ["bad arguments for architecture 'xvector'"]),
    ],
)
def test_bad_options(toy_corpus: Path, tmp_path: Path, run_cli, extra, needles):
    out = tmp_path / "out"
    result = run_cli(cli, train_args(toy_corpus / "train" / "manifest.jsonl", out, *extra))
    assert_one_error(result, *needles)
    assert_nothing_written(out)


def test_out_is_a_file(toy_corpus: Path, tmp_path: Path, run_cli):
    out = tmp_path / "out"
    out.write_text("precious")
    result = run_cli(cli, train_args(toy_corpus / "train" / "manifest.jsonl", out))
    assert_one_error(result, str(out), "not a directory")
    assert out.read_text() == "precious"


def test_short_and_resampled_audio_is_padded(toy_manifests, tmp_path: Path, run_cli):
    """Documented fallbacks: a 0.3-s training utterance (shorter than the 0.5-s crop, stored
    at 8 kHz and resampled on read) is repeat-padded; a 0.1-s test utterance is padded to
    the evaluation minimum instead of being too short for the x-vector's context."""
    train, test = toy_manifests
    rng = np.random.default_rng(0)
    short = tmp_path / "short.wav"
    soundfile.write(short, 0.1 * rng.standard_normal(2400), 8000, subtype="PCM_16")
    tiny = tmp_path / "tiny.wav"
    soundfile.write(tiny, 0.1 * rng.standard_normal(1600), 16000, subtype="PCM_16")
    train_m = write_manifest(tmp_path / "train.jsonl", [
        *train, Utterance("short/v/1.wav", train[0].speaker, str(short), 4800, 16000)])
    test_m = write_manifest(tmp_path / "test.jsonl", [
        *test, Utterance("tiny/v/1.wav", test[0].speaker, str(tiny), 1600, 16000)])
    trials = tmp_path / "trials.txt"
    trials.write_text(f"1 {test[0].id} tiny/v/1.wav\n0 {test[-1].id} tiny/v/1.wav\n"
                      f"1 {test[0].id} {test[1].id}\n0 {test[0].id} {test[-1].id}\n")
    out = tmp_path / "out"
    result = run_cli(cli, train_args(train_m, out, "--batch-size", "11", test=test_m,
                                     trials=trials))
    assert result.exit_code == 0, result.stderr
    final = json.loads((out / "results.json").read_text())["final"]
    assert np.isfinite(final["loss"]) and 0.0 <= final["eer"] <= 1.0


def test_help_explains_resume(run_cli):
    result = run_cli(cli, ["--help"])
    assert result.exit_code == 0
    assert "--resume" in result.stdout and "--workers may change" in result.stdout


def test_resolve_config_applies_overrides_to_the_preset():
    demo = PRESETS["demo"]
    config = resolve_config("demo", {"lr": 0.05, "epochs": 3, "batch_size": None})
    assert config.epochs == 3 and config.batch_size == demo.batch_size
    # --epochs rescales the preset's schedule over the run (as a student's --epochs does)
    assert config.schedule == scaled_schedule(3, "sgd", 0.05)
    # another optimizer: its own scaled schedule over the run, never the preset's LR
    vox = resolve_config("voxceleb", {"optimizer": "adamw"})
    assert PRESETS["voxceleb"].schedule.optimizer == "sgd"
    assert vox.schedule == scaled_schedule(150, "adamw") and vox.schedule.lr == 3e-3
    low = resolve_config("voxceleb", {"optimizer": "adamw", "lr": 1e-3, "epochs": 16})
    assert low.schedule == scaled_schedule(16, "adamw", 1e-3)
    assert resolve_config("demo", {"optimizer": demo.schedule.optimizer}) == demo


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ce_step_moves_the_batch_to_the_nets_device():
    from speaker.models import build
    from speaker.models.heads import AAMSoftmax
    from speaker.training.trainer import SpeakerNet

    net = SpeakerNet(build("xvector", channels=32, embed_dim=32), AAMSoftmax(32, 4)).cuda()
    loss, logs = ce_step(net, (torch.randn(4, 50, 80), torch.tensor([0, 1, 2, 3])), 0.0)
    assert loss.device.type == "cuda" and np.isfinite(logs["loss"])


# ---- torchrun ---------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_ranks(toy_corpus: Path, tmp_path: Path):
    """``torchrun --nproc_per_node 2`` (gloo on CPU): both ranks train, rank 0 writes."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "stage1_teacher.train",
               *tiny_args(toy_corpus, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.state["epoch"] == EPOCHS
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert 0.0 <= results["final"]["eer"] <= 1.0


# The demo's teacher as a flag list (experiments.recipes.TEACHER_RECIPE before the preset).
DEMO_TEACHER_FLAGS = ["--preset", "demo", "--optimizer", "adamw", "--lr", "3e-3",
                      "--batch-size", "32"]


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The teacher CLI's resolved config for some options, without training."""
    from stage1_teacher import train

    seen = {}
    monkeypatch.setattr(train, "train_teacher",
                        lambda config, data, out, resume: seen.update(config=config) or {})

    def resolve(args: list[str]) -> dict:
        cli.main([*args, "--data", str(tmp_path), "--out", str(tmp_path / "run")],
                 standalone_mode=False)
        return asdict(seen["config"])

    return resolve


@pytest.mark.parametrize("extra", [[], ["--epochs", "6"], ["--epochs", "6", "--lr", "1e-3"]])
def test_demo_teacher_preset_is_the_demos_flag_list(resolved, extra):
    assert resolved(["--preset", "demo-teacher", *extra]) == resolved([*DEMO_TEACHER_FLAGS,
                                                                       *extra])
    assert PRESETS["demo-teacher"] == resolve_config("demo", {"optimizer": "adamw", "lr": 3e-3,
                                                              "batch_size": 32})
