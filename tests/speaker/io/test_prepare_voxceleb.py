"""speaker.io.prepare_voxceleb on a small generated VoxCeleb/MUSAN/RIRS_NOISES tree: the
root it writes is what DataPaths reads, with and without HDF5 packs; bad input -> one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speaker.io import prepare_voxceleb
from speaker.io.audio import AudioReader, load_audio
from speaker.io.paths import DataPaths


@pytest.fixture(scope="module")
def script():
    return prepare_voxceleb


def wav(path: Path, seconds: float, seed: int, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    soundfile.write(path, 0.1 * rng.standard_normal(int(seconds * rate)), rate, subtype="PCM_16")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """vox2/dev/wav/<id>/<video>/<n>.wav (3 speakers), vox1/wav (3 speakers, one utterance
    left out of the trials, one at 8 kHz), a trial list, musan/ and RIRS_NOISES/."""
    root = tmp_path_factory.mktemp("sources")
    n = 0
    for spk in ("id00012", "id00015", "id00020"):
        for video in ("abc-_9", "Zx1"):
            for utt in (1, 2):
                n += 1
                wav(root / "vox2/dev/wav" / spk / video / f"{utt:05d}.wav", 0.4, n)
    for spk in ("id10270", "id10271", "id10272"):
        for utt in (1, 2):
            n += 1
            wav(root / "vox1/wav" / spk / "v1" / f"{utt:05d}.wav", 0.3, n)
    wav(root / "vox1/wav/id10272/v1/00003.wav", 0.3, 99, rate=8000)
    trials = root / "veri_test2.txt"
    trials.write_text(
        "1 id10270/v1/00001.wav id10270/v1/00002.wav\n"
        "0 id10270/v1/00001.wav id10271/v1/00001.wav\n"
        "1 id10271/v1/00001.wav id10271/v1/00002.wav\n"
        "0 id10271/v1/00002.wav id10272/v1/00003.wav\n"
    )
    wav(root / "musan/noise/free-sound/noise-0001.wav", 0.5, 200)
    wav(root / "musan/music/fma/music-0001.wav", 0.5, 201)
    wav(root / "musan/speech/librivox/speech-0001.wav", 0.5, 202)
    wav(root / "RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav", 0.1, 203)
    wav(root / "RIRS_NOISES/pointsource_noises/noise-free-sound-0001.wav", 0.2, 204)
    return {"vox2": root / "vox2/dev/wav", "vox1": root / "vox1",  # vox1: the folder above wav/
            "trials": trials, "musan": root / "musan", "rirs": root / "RIRS_NOISES"}


def args(sources: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--voxceleb2-dev", str(sources["vox2"]), "--voxceleb1", str(sources["vox1"]),
            "--trials", str(sources["trials"]), "--musan", str(sources["musan"]),
            "--rirs", str(sources["rirs"]), "--out", str(out), *extra]


@pytest.mark.parametrize("pack", [False, True])
def test_prepared_root_reads_back(script, sources, tmp_path: Path, run_cli, pack: bool):
    out = tmp_path / "data" / "vox"
    result = run_cli(script.cli, args(sources, out, *(["--pack"] if pack else [])))
    assert result.exit_code == 0, result.stderr
    assert "train: 12 utterances, 3 speakers" in result.stdout
    assert "test: 5 utterances; trials: 4 (2 target)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "musan", "prepared.json", "rirs", "test", "train"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left

    paths = DataPaths(data=out)
    train = paths.train_manifest()
    assert len(train) == 12 and train.speakers == ["id00012", "id00015", "id00020"]
    assert train[0].id == "id00012/Zx1/00001.wav"  # sorted ids, as trial lists write them
    test, trials = paths.test_set()
    # only what the trials name: id10272/v1/00001-2 are left out
    assert test.ids == ["id10270/v1/00001.wav", "id10270/v1/00002.wav",
                        "id10271/v1/00001.wav", "id10271/v1/00002.wav", "id10272/v1/00003.wav"]
    assert [(t.target, t.enroll, t.test) for t in trials][1] == (
        False, "id10270/v1/00001.wav", "id10271/v1/00001.wav")
    assert test[4].num_samples == 4800  # 0.3 s at 8 kHz counted at 16 kHz
    bank = paths.noise_bank(16000)
    assert [len(bank.noise), len(bank.music), len(bank.speech), len(bank.rirs)] == [1, 1, 1, 1]
    assert (out / "musan").is_symlink() and (out / "rirs").resolve() == sources["rirs"].resolve()

    reader = AudioReader(16000)
    for utt in (train[3], test[4]):
        audio = reader.read(utt)
        assert len(audio) == utt.num_samples
        source = sources["vox2"] / utt.id if utt.speaker < "id1" else sources["vox1"] / "wav" / utt.id
        expect = load_audio(source, 16000)
        if pack:
            assert utt.key == utt.id and Path(utt.path).name == "audio.h5"
            np.testing.assert_allclose(audio, expect, atol=1 / 32768 + 1e-7)
        else:
            assert Path(utt.path) == source
            np.testing.assert_array_equal(audio, expect)
    lines = (out / "train" / "manifest.jsonl").read_text().splitlines()
    if pack:  # relative: the root can move
        assert json.loads(lines[0])["path"] == "audio.h5"
    meta = json.loads((out / "prepared.json").read_text())
    assert meta["pack"] is pack and meta["trials"] == {"total": 4, "target": 2}


def test_unknown_trial_id_is_one_error(script, sources, tmp_path: Path, run_cli):
    trials = tmp_path / "list_test_hard2.txt"
    trials.write_text("1 id10270/v1/00001.wav id10270/v1/00002.wav\n"
                      "0 id10270/v1/00001.wav id10999/zz/00001.wav\n")
    out = tmp_path / "vox"
    result = run_cli(script.cli, [*args(sources, out), "--trials", str(trials)])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert f"{trials}:2: unknown utterance id 'id10999/zz/00001.wav'" in result.error_lines[0]
    assert not out.exists() and not list(tmp_path.glob(".vox*"))


def test_m4a_tree_is_explained(script, sources, tmp_path: Path, run_cli):
    aac = tmp_path / "aac" / "id00012" / "abc"
    aac.mkdir(parents=True)
    (aac / "00001.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    result = run_cli(script.cli, [*args(sources, tmp_path / "vox"), "--voxceleb2-dev",
                                  str(tmp_path / "aac")])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert ".m4a (AAC)" in result.error_lines[0] and "convert" in result.error_lines[0]


def test_existing_root_is_kept_unless_forced(script, sources, tmp_path: Path, run_cli):
    out = tmp_path / "vox"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli(script.cli, args(sources, out))
    assert result.exit_code == 2 and "--force" in result.error_lines[0]
    assert (out / "keep.txt").read_text() == "mine"
    result = run_cli(script.cli, args(sources, out, "--force"))
    assert result.exit_code == 0, result.stderr
    assert not (out / "keep.txt").exists() and (out / "train" / "manifest.jsonl").is_file()


def test_bad_musan_and_rirs(script, sources, tmp_path: Path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(script.cli, [*args(sources, tmp_path / "a"), "--musan", str(empty)])
    assert result.exit_code == 2 and "MUSAN layout" in result.error_lines[0]
    result = run_cli(script.cli, [*args(sources, tmp_path / "b"), "--rirs", str(empty)])
    assert result.exit_code == 2 and "no .wav files" in result.error_lines[0]


def test_help_mentions_aac_conversion(script, run_cli):
    result = run_cli(script.cli, ["--help"])
    assert result.exit_code == 0
    assert "m4a" in result.stdout and "ffmpeg" in result.stdout and "--pack" in result.stdout


def test_dev_speakers_are_carved_from_training(script, sources, tmp_path: Path, run_cli):
    """--dev-speakers moves whole training speakers into dev/ with a half-target trial list of
    dev utterances; train, dev and test share no speaker; the same seed gives the same split."""
    out = tmp_path / "vox"
    result = run_cli(script.cli, args(sources, out, "--dev-speakers", "2", "--dev-pairs", "3"))
    assert result.exit_code == 0, result.stderr
    paths = DataPaths(data=out)
    train, (dev, trials), (test, _) = paths.train_manifest(), paths.dev_set(), paths.test_set()
    assert len(dev.speakers) == 2 and len(train.speakers) == 1
    assert not set(train.speakers) & set(dev.speakers)
    assert not set(dev.speakers) & set(test.speakers)
    assert len(train) + len(dev) == 12  # every source utterance is in exactly one split
    # each dev speaker has 4 utterances -> 6 pairs, 3 kept, each with one non-target
    assert len(trials) == 12 and sum(t.target for t in trials) == 6
    speaker_of = {u.id: u.speaker for u in dev}
    for t in trials:
        assert (speaker_of[t.enroll] == speaker_of[t.test]) == t.target
    again = tmp_path / "again"
    run_cli(script.cli, args(sources, again, "--dev-speakers", "2", "--dev-pairs", "3"))
    assert (again / "dev/trials.txt").read_text() == (out / "dev/trials.txt").read_text()
    result = run_cli(script.cli, args(sources, tmp_path / "x", "--dev-speakers", "3"))
    assert result.exit_code == 2 and "--dev-speakers 3" in result.stderr
