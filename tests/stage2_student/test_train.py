"""Student training CLI: two architectures from one cache, exact resume after SIGKILL,
refusals before any training, online KD with a live teacher, and torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import torch

from speaker.io.manifest import LabelMap, Manifest
from speaker.models import build
from speaker.models.checkpoint import load_checkpoint, save_checkpoint
from speaker.models.heads import AAMSoftmax
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from stage2_student.train import cli
from store.cli import run

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3  # of the shared student_run (tests/conftest.py)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: one thread is as fast, far faster on a busy machine, and the same
    count as the subprocesses below get (bit-exact comparisons need that)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_in_process(args: list[str]) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli.main([str(a) for a in args], standalone_mode=False)
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def reference(student_run) -> Path:
    """An uninterrupted 3-epoch cached-DKD x-vector run (in-process, no loader workers)."""
    return student_run.out


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["history"]


# ---- training -----------------------------------------------------------------------------


def test_reference_run_is_complete(reference: Path, student_cache):
    ckpt = load_checkpoint(reference / "model.pt")
    assert ckpt.state["epoch"] == EPOCHS and ckpt.arch == "xvector"
    spec_classes = len(ckpt.label_map["speakers"]) * len(ckpt.label_map["speeds"])
    assert ckpt.head.weight.shape == (spec_classes, 32) and spec_classes == 24
    results = json.loads((reference / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert all(h["kd"] > 0 for h in results["history"])  # cached DKD is on
    assert "eer" in results["final"] and 0.0 <= results["final"]["eer"] <= 1.0
    assert (reference / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((reference / "config.json").read_text())
    assert config["distill"]["loss"] == "dkd" and config["distill"]["beta"] == 2.0
    assert Path(config["cache"]).is_absolute()


def test_two_architectures_train_from_one_cache(reference: Path, student_cache, tmp_path):
    """The fast stand-in for the EER test below (marked slow): the same cache trains an
    x-vector (the reference run) and an ECAPA-TDNN, and both fit it: the training loss of
    the last epoch is clearly below the first's, though the KD weight and the AAM margin
    grow in between."""
    out = tmp_path / "ecapa"
    train_in_process(["--cache", student_cache.cache, "--data", student_cache.corpus,
                      "--out", out, "--epochs", str(EPOCHS), "--arch", "ecapa",
                      "--arch-opt", "channels=16", "--arch-opt", "embed_dim=32",
                      "--batch-size", "16", "--workers", "0"])
    assert load_checkpoint(out / "model.pt").arch == "ecapa"
    for run_dir in (reference, out):
        epochs = history(run_dir)
        loss, ce = [h["loss"] for h in epochs], [h["ce"] for h in epochs]
        assert loss[-1] < 0.75 * loss[0] and ce[-1] < ce[0], (run_dir.name, loss, ce)



def test_a_run_without_a_test_set_records_its_history_only(student_cache, tmp_path: Path):
    """Given only --train (another step evaluates the models together, as the demo does),
    the run still writes results.json, its sign of a finished run, with the training
    history and no evaluation."""
    corpus = Path(student_cache.corpus)
    aug = [a for name in ("musan", "rirs") if (corpus / name).exists()
           for a in (f"--{name}", corpus / name)]
    out = tmp_path / "no-test"
    train_in_process(["--cache", student_cache.cache, "--train",
                      corpus / "train" / "manifest.jsonl", *aug, "--out", out,
                      "--epochs", "1", "--workers", "0"])
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1]
    assert results["final"] == results["history"][-1] and "eer" not in results["final"]
    assert not (out / "det.png").exists()

def test_sigkilled_run_resumes_to_the_same_weights(student_run, reference: Path,
                                                    tmp_path: Path,
                                                    sigkill_once_checkpointed,
                                                    assert_same_weights):
    """A real ``python -m stage2_student.train`` (one loader worker) SIGKILLed once its first
    checkpoint exists, then the same command with --resume, ends with the weights, history
    and results of the uninterrupted in-process run (no workers)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "stage2_student.train", *student_run.command(out),
               "--workers", "1"]
    killed_at = sigkill_once_checkpointed(command, out, ONE_THREAD)
    assert 1 <= killed_at < EPOCHS, "the run finished before it could be killed"
    assert not (out / "results.json").exists()

    done = subprocess.run([*command, "--resume"], cwd=REPO, env=ONE_THREAD,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed {out / 'model.pt'} after epoch {killed_at}" in done.stderr
    assert_same_weights(out / "model.pt", reference / "model.pt")
    assert (json.loads((out / "results.json").read_text())
            == json.loads((reference / "results.json").read_text()))


def test_online_dkd_with_a_live_teacher_trains(student_cache, student_run, tmp_path: Path):
    out = tmp_path / "online"
    train_in_process([*student_run.command(out), "--epochs", "1", "--loss", "dkd",
                      "--online-teacher", student_cache.teacher])
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.state["epoch"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["online_teacher"] == str(student_cache.teacher)
    (epoch,) = history(out)
    assert epoch["kd"] > 0 and torch.isfinite(torch.tensor(epoch["loss"]))


# ---- the run's config.json fed back with --config -----------------------------------------


def test_config_json_reruns_the_run(reference: Path, tmp_path: Path, assert_same_weights):
    out = tmp_path / "again"
    train_in_process(["--config", reference / "config.json", "--out", out])
    assert (json.loads((out / "config.json").read_text())
            == json.loads((reference / "config.json").read_text()))
    assert_same_weights(out / "model.pt", reference / "model.pt")


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch):
    """The CLI's resolved (config, cache, data) without training."""
    from stage2_student import train

    seen = {}

    def record(config, cache, data, out, resume, storage_options=None):
        seen.update(config=config, cache=cache, data=data)
        return {}

    monkeypatch.setattr(train, "train_student", record)

    def resolve(args: list) -> dict:
        cli.main([str(a) for a in args], standalone_mode=False)
        return seen

    return resolve


def test_config_options_replace_saved_values(reference: Path, student_cache, resolved,
                                             tmp_path: Path):
    saved = json.loads((reference / "config.json").read_text())
    got = resolved(["--config", reference / "config.json", "--out", tmp_path,
                    "--epochs", "15", "--beta", "8", "--arch-opt", "channels=16"])
    config = got["config"]
    assert got["cache"] == Path(saved["cache"]) and got["data"].data == student_cache.corpus
    assert config.epochs == 15 and config.distill.beta == 8.0
    assert config.distill.alpha == saved["distill"]["alpha"]
    assert config.distill.warmup_epochs == 2.0  # 2/15 of the new --epochs
    assert config.schedule.warmup_epochs == 15 / 8  # the schedule spans the new run
    assert config.arch_kwargs == {"channels": 16, "embed_dim": 32}  # merged into the saved
    assert config.schedule.scale == saved["schedule"]["scale"] == 32.0


def test_defaults_follow_the_run_and_the_cache(student_cache, resolved, tmp_path: Path):
    config = resolved(["--cache", student_cache.cache, "--data", student_cache.corpus,
                       "--out", tmp_path, "--epochs", "30"])["config"]
    assert config.distill.warmup_epochs == 4.0  # 2/15 of 30
    assert config.distill.kd_logits == "margin"
    assert config.schedule.scale == 32.0  # the cache's teacher scale


def test_help_has_examples_and_no_teacher_option():
    text = cli.get_help(click.Context(cli))
    assert "Examples:" in text and "--online-teacher" in text and "--config" in text
    assert "--teacher " not in text and "--teacher-margin" not in text
    assert "2/15" in text  # the KD warm-up default


# ---- learning: two architectures from one cache, EER after epoch 1 vs at the end ----------

# 96 speakers (EER on unseen speakers needs many), 6 utterances each, 2 cached views of 1 s
# -> 1152 rows = 72 steps of 16 per epoch; 16 test speakers x 6 utterances = 480 trials.
LEARN_TOY = {"speakers": 96, "utts_per_speaker": 6, "duration": 1.5, "test_speakers": 16,
             "test_utts_per_speaker": 6, "seed": 0, "dev_speakers": 0}
LEARN_STUDENTS = {
    "xvector": ["--arch", "xvector", "--arch-opt", "channels=64", "--arch-opt", "embed_dim=32"],
    # AdamW's default 3e-3 leaves this 16-channel ECAPA where it started (0.442 -> 0.471)
    "ecapa": ["--arch", "ecapa", "--arch-opt", "channels=16", "--arch-opt", "embed_dim=32",
              "--lr", "1e-2"],
}


@pytest.fixture(scope="module")
def learning_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus, cache) big enough for EER on unseen speakers to move: a 2-epoch x-vector
    teacher, k=16, augmentation on a third of the views."""
    from stage1_teacher.dump import cli as dump_cli
    from stage1_teacher.train import cli as teacher_cli

    root = tmp_path_factory.mktemp("learning")
    generate(ToyConfig(**LEARN_TOY), root / "corpus")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher_cli.main(["--data", str(root / "corpus"), "--out", str(root / "teacher"),
                          "--arch", "xvector", "--arch-opt", "channels=64",
                          "--arch-opt", "embed_dim=32", "--epochs", "2", "--batch-size", "32",
                          "--crop-seconds", "1.0", "--optimizer", "adamw", "--workers", "1"],
                         standalone_mode=False)
        dump_cli.main(["--teacher", str(root / "teacher" / "model.pt"),
                       "--data", str(root / "corpus"), "--out", str(root / "logits.zarr"),
                       "--views-per-utt", "2", "--crop-seconds", "1.0", "--topk", "16",
                       "--aug-prob", "0.3", "--chunk-rows", "128", "--shard-rows", "512",
                       "--threads", "1", "--workers", "1"], standalone_mode=False)
    finally:
        torch.set_num_threads(before)
    return root / "corpus", root / "logits.zarr"


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(LEARN_STUDENTS))
def test_students_improve_on_their_first_epoch_eer(arch: str, learning_cache, tmp_path: Path):
    """Issue 6: two architectures trained (cached DKD) from the same cache both end with a
    lower EER on unseen speakers than after their first epoch. Deterministic (seeded, one
    thread, CPU), ~1.5 min. NOTE: at this scale (96 speakers x 6 utterances, 1-s crops,
    a 2-epoch teacher at 41 % EER) the ECAPA's gain is within the EER's noise
    (0.4625 -> 0.4542 when written): a meaningful version needs a larger corpus and
    teacher than a test can afford on 2 cores."""
    corpus, cache = learning_cache
    out = tmp_path / arch
    train_in_process(["--cache", cache, "--data", corpus, "--out", out,
                      *LEARN_STUDENTS[arch], "--loss", "dkd", "--epochs", "4",
                      "--optimizer", "adamw", "--batch-size", "16", "--eval-every", "1",
                      "--workers", "1"])
    eer = [h["eer"] for h in history(out)]
    assert len(eer) == 4
    assert eer[-1] < eer[0], f"{arch}: EER per epoch {eer}"


# ---- refusals before any training -------------------------------------------------------


@dataclass
class Outcome:
    exit_code: int
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def train_cli(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    """Run the CLI as ``python -m stage2_student.train`` does (StoreError is user input)."""

    def invoke(args: list) -> Outcome:
        capfd.readouterr()
        monkeypatch.setattr(sys, "argv", ["prog", *map(str, args)])
        code = 0
        try:
            run(cli)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return Outcome(code, capfd.readouterr().err)

    return invoke


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another toy corpus (other speakers, other noise bank)."""
    out = tmp_path_factory.mktemp("other") / "corpus"
    generate(ToyConfig(speakers=3, utts_per_speaker=2, duration=0.6, test_speakers=2, seed=1,
                      dev_speakers=0),
             out)
    return out


@pytest.fixture(scope="module")
def foreign_teacher(other_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) teacher checkpoint over the other corpus's speakers."""
    path = tmp_path_factory.mktemp("foreign") / "model.pt"
    labels = LabelMap.from_manifest(Manifest.read(other_corpus / "train" / "manifest.jsonl"))
    model = build("xvector", channels=32, embed_dim=32)
    save_checkpoint(path, arch="xvector", arch_kwargs={"channels": 32, "embed_dim": 32},
                    model=model, head=AAMSoftmax(32, labels.num_classes),
                    label_map=labels.to_dict(), config={})
    return path


REFUSALS = {
    # name: (extra args, with {other}/{foreign} filled in, words the error line must contain)
    "manifest": (["--data", "{other}"], ["manifest"]),
    "emb-without-embeddings": (["--loss", "emb"], ["--loss emb", "embeddings"]),
    "topk-above-k": (["--topk", "5"], ["k'=5", "k=4"]),
    "temperature-off-grid": (["--temperature", "3"], ["temperature 3", "grid"]),
    "noise-bank": (["--musan", "{other}/musan"], ["noise bank"]),
    "batch-larger-than-rows": (["--batch-size", "97"], ["--batch-size 97"]),
    "online-teacher-classes": (["--online-teacher", "{foreign}"],
                               ["--online-teacher", "label map"]),
    "scale-mismatch": (["--scale", "30"], ["logit scale 30", "teacher's 32", "--scale 32"]),
    "online-scale-mismatch": (["--online-teacher", "{foreign}", "--scale", "30"],
                              ["logit scale 30", "teacher's 32", "--online-teacher"]),
    "teacher-is-stage-1s": (["--teacher", "{foreign}"], ["--teacher"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_before_training(case: str, student_run, other_corpus: Path,
                                 foreign_teacher: Path, tmp_path: Path, train_cli):
    extra, words = REFUSALS[case]
    extra = [a.format(other=other_corpus, foreign=foreign_teacher) for a in extra]
    out = tmp_path / "run"
    args = student_run.command(out)
    if "--data" in extra:  # replace, not repeat
        args[args.index("--data") + 1] = extra[1]
        extra = []
    outcome = train_cli([*args, *extra])
    assert outcome.exit_code == 2, outcome.stderr
    assert len(outcome.error_lines) == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    for word in words:
        assert word in outcome.error_lines[0], outcome.error_lines[0]
    assert not (out / "model.pt").exists()


def test_config_of_a_teacher_run_is_refused(student_cache, student_run, tmp_path: Path,
                                            train_cli):
    teacher_config = Path(student_cache.teacher).parent / "config.json"
    outcome = train_cli(["--config", teacher_config, "--out", tmp_path / "run"])
    assert outcome.exit_code == 2 and len(outcome.error_lines) == 1, outcome.stderr
    assert "not a student run's config.json (kind 'teacher')" in outcome.error_lines[0]
    assert str(teacher_config) in outcome.error_lines[0]


def test_refusal_through_python_dash_m(student_cache, student_run, other_corpus: Path,
                                       tmp_path: Path):
    """The real entry point: one ``error:`` line on stderr and exit status 2."""
    out = tmp_path / "run"
    args = student_run.command(out)
    args[args.index("--data") + 1] = str(other_corpus)
    done = subprocess.run([sys.executable, "-m", "stage2_student.train", *args], cwd=REPO,
                          env=ONE_THREAD, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "manifest" in errors[0] and str(student_cache.cache) in errors[0]
    assert "Traceback" not in done.stderr
    assert not out.exists()


# ---- torchrun -----------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_ranks(student_run, tmp_path: Path):
    """``torchrun --nproc_per_node 2`` (gloo on CPU): both ranks train in lock-step on
    disjoint chunks, rank 0 writes the checkpoint and the results."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "stage2_student.train",
               *student_run.command(out), "--batch-size", "8", "--workers", "1"]
    done = subprocess.run(command, cwd=REPO, env=ONE_THREAD, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.state["epoch"] == EPOCHS
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert all(h["kd"] > 0 for h in results["history"])
    assert 0.0 <= results["final"]["eer"] <= 1.0
