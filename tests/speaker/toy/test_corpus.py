"""The synthetic corpus: determinism, layout, manifests/trials consistency, CLI behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speaker.io.manifest import Manifest, read_trials
from speaker.io.paths import DataPaths
from speaker.toy.config import TEST_BASE, ToyConfig, family_of
from speaker.toy.corpus import generate
from speaker.toy.voice import _speaker_vector, synthesize_utterance, utterance_id
from store.errors import UserError

TINY = {"speakers": 6, "utts_per_speaker": 3, "duration": 1.0, "test_speakers": 3, "dev_speakers": 3}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "corpus"
    generate(ToyConfig(**TINY), out)
    return out


def test_same_arguments_same_bytes_whatever_the_workers(corpus, tmp_path):
    other = tmp_path / "again"
    generate(ToyConfig(**TINY), other, workers=2)
    a, b = tree(corpus), tree(other)
    assert list(a) == list(b)
    assert [k for k in a if a[k] != b[k]] == []
    # nothing left behind next to the output
    assert [p.name for p in tmp_path.iterdir()] == ["again"]


def test_another_seed_gives_other_audio(corpus, tmp_path):
    generate(ToyConfig(**TINY, seed=1), tmp_path / "s1")
    a, b = tree(corpus), tree(tmp_path / "s1")
    wavs_a = {k: v for k, v in a.items() if k.endswith(".wav")}
    wavs_b = {k: v for k, v in b.items() if k.endswith(".wav")}
    assert set(wavs_a) != set(wavs_b)  # video ids differ
    assert a["musan/noise/noise-0000.wav"] != b["musan/noise/noise-0000.wav"]
    assert a["rirs/rir-0000.wav"] != b["rirs/rir-0000.wav"]


def test_layout_manifests_and_trials_agree(corpus):
    cfg = ToyConfig(**TINY)
    train = Manifest.read(corpus / "train" / "manifest.jsonl")
    test = Manifest.read(corpus / "test" / "manifest.jsonl")
    assert len(train) == 6 * 3 and len(test) == 3 * 3
    assert train.speakers == [f"id{i:05d}" for i in range(6)]
    assert test.speakers == [f"id{TEST_BASE + j:05d}" for j in range(3)]
    assert not set(train.speakers) & set(test.speakers)
    for name, m in (("train", train), ("test", test)):
        d = corpus / name
        assert m.ids == sorted(m.ids)
        for u in m:
            spk, video, file = u.id.split("/")
            assert spk == u.speaker and len(video) == 11 and file.endswith(".wav")
            assert Path(u.path) == (d / "wav" / u.id).resolve() and u.key is None
            info = soundfile.info(u.path)
            assert (info.frames, info.samplerate, info.subtype) == (u.num_samples, 16000, "PCM_16")
            assert 0.8 * 16000 <= u.num_samples <= 1.2 * 16000
        # Kaldi files and the VoxCeleb tree say the same as the manifest
        lines = (d / "utt2spk").read_text().splitlines()
        assert lines == [f"{u.id} {u.speaker}" for u in m]
        lines = (d / "utt2num_samples").read_text().splitlines()
        assert lines == [f"{u.id} {u.num_samples}" for u in m]
        lines = (d / "wav.scp").read_text().splitlines()
        assert lines == [f"{u.id} wav/{u.id}" for u in m]
        spk2utt = dict(line.split(" ", 1) for line in (d / "spk2utt").read_text().splitlines())
        assert {s: v.split() for s, v in spk2utt.items()} == {
            s: [u.id for u in m if u.speaker == s] for s in m.speakers}
        assert Manifest.from_voxceleb(d / "wav").ids == m.ids
        rows = [r.split("\t") for r in (d / "speakers.tsv").read_text().splitlines()[1:]]
        assert [(r[0], int(r[1]), int(r[2])) for r in rows] == [
            (s, *family_of(cfg, int(s[2:]))) for s in m.speakers]

    trials = read_trials(corpus / "test" / "trials.txt", known_ids=set(test.ids))
    assert len(trials) == 2 * 3 * 3  # every target pair once, one non-target each
    assert sum(t.target for t in trials) == len(trials) // 2
    for t in trials:
        same = t.enroll.split("/")[0] == t.test.split("/")[0]
        assert same == t.target and t.enroll != t.test
    readme = (corpus / "README.txt").read_text()
    assert "  speaker_spread " in readme and "  workers " not in readme


def test_noise_bank_and_rirs(corpus):
    for sub, n, seconds in (("noise", 12, 6.0), ("music", 8, 8.0), ("speech", 8, 8.0)):
        files = sorted((corpus / "musan" / sub).glob("*.wav"))
        assert len(files) == n
        x, sr = soundfile.read(files[0])
        assert sr == 16000 and len(x) == round(seconds * sr) and 0 < np.abs(x).max() < 1
    rirs = sorted((corpus / "rirs").glob("*.wav"))
    assert len(rirs) == 20
    for p in rirs:
        h, _ = soundfile.read(p)
        energy = np.cumsum(h[::-1] ** 2)[::-1]  # Schroeder backward integration
        db = 10 * np.log10(energy / energy[0] + 1e-12)
        t20 = np.argmax(db < -25) - np.argmax(db < -5)  # T20 extrapolated to 60 dB
        rt60 = 3.0 * t20 / 16000
        assert 0.12 < rt60 < 1.0, (p.name, rt60)


def test_pack_holds_the_same_audio(corpus, tmp_path):
    from speaker.io.audio import AudioReader

    cfg = ToyConfig(**TINY, pack=True)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert not (tmp_path / "a" / "train" / "wav").exists()
    packed = Manifest.read(tmp_path / "a" / "train" / "manifest.jsonl")
    plain = Manifest.read(corpus / "train" / "manifest.jsonl")
    assert packed.ids == plain.ids
    reader = AudioReader(16000)
    for p, w in zip(packed, plain, strict=True):
        assert p.key == p.id
        assert Path(p.path) == (tmp_path / "a" / "train" / "audio.h5").resolve()
        np.testing.assert_array_equal(reader.read(p), reader.read(w))


def test_utterances_are_pure_functions_of_seed_speaker_and_index():
    cfg = ToyConfig(duration=0.5)
    uid, audio = synthesize_utterance(cfg, 3, 5)
    assert uid == utterance_id(cfg, 3, 5) and uid.endswith("/00002.wav")
    synthesize_utterance(cfg, 4, 0)  # other work in between changes nothing
    uid2, audio2 = synthesize_utterance(cfg, 3, 5)
    assert uid2 == uid and np.array_equal(audio, audio2)
    # a speaker's first video is shared by its first four utterances
    assert utterance_id(cfg, 3, 0).split("/")[1] == utterance_id(cfg, 3, 3).split("/")[1]
    assert utterance_id(cfg, 3, 0).split("/")[1] != utterance_id(cfg, 3, 4).split("/")[1]
    cfg8 = ToyConfig(duration=0.5, sample_rate=8000)
    assert 0.4 * 8000 <= synthesize_utterance(cfg8, 3, 5)[1].size <= 0.6 * 8000


def test_speakers_are_clustered_in_populations_and_families():
    cfg = ToyConfig()
    groups = cfg.populations * cfg.families
    z = {i: _speaker_vector(cfg, i) for i in range(groups * 4)}

    def mean_dist(pairs):
        return np.mean([np.linalg.norm(z[a] - z[b]) for a, b in pairs])

    pairs = [(a, b) for a in z for b in z if a < b]
    same_family = [(a, b) for a, b in pairs if family_of(cfg, a)[1] == family_of(cfg, b)[1]]
    same_pop = [(a, b) for a, b in pairs if family_of(cfg, a)[0] == family_of(cfg, b)[0]
                and (a, b) not in same_family]
    other = [(a, b) for a, b in pairs if family_of(cfg, a)[0] != family_of(cfg, b)[0]]
    assert mean_dist(same_family) < mean_dist(same_pop) < mean_dist(other)


def test_bad_arguments_are_one_line_errors(corpus, tmp_path):
    with pytest.raises(UserError, match="test-speakers"):
        ToyConfig(test_speakers=1)
    with pytest.raises(UserError, match="2 or more"):
        ToyConfig(utts_per_speaker=1)
    with pytest.raises(UserError, match="not empty"):
        generate(ToyConfig(**TINY), corpus)
    proc = subprocess.run(
        [sys.executable, "-m", "speaker.toy", "--out", str(corpus), *sum(
            ([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()), [])],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {corpus} already exists and is not empty; remove it or pass --force"]
    help_text = subprocess.run([sys.executable, "-m", "speaker.toy", "--help"],
                               capture_output=True, text=True, timeout=60).stdout
    assert "--speaker-spread" in help_text and "Examples" in help_text


def test_dev_split_has_speakers_and_trials_of_its_own(corpus):
    """dev/ is a third speaker set (like test/, with its own trials); train, dev and test share
    no speaker, and the dev trials name dev utterances only."""
    paths = DataPaths(data=corpus)
    train = paths.train_manifest()
    dev, dev_trials = paths.dev_set()
    test, test_trials = paths.test_set()
    assert dev.speakers == [f"id{80_000 + j:05d}" for j in range(TINY["dev_speakers"])]
    speakers = [set(m.speakers) for m in (train, dev, test)]
    assert sum(len(s) for s in speakers) == len(set.union(*speakers))
    dev_ids = set(dev.ids)
    assert dev_trials and all(t.enroll in dev_ids and t.test in dev_ids for t in dev_trials)
    assert {t.target for t in dev_trials} == {True, False}
    assert paths.split("dev")[0].ids == dev.ids and paths.has_dev


def test_no_dev_speakers_no_dev_split(tmp_path):
    generate(ToyConfig(**{**TINY, "dev_speakers": 0}), tmp_path / "c")
    assert not (tmp_path / "c" / "dev").exists()
    assert not DataPaths(data=tmp_path / "c").has_dev
