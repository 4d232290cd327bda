"""DataPaths (--data root vs explicit paths) and load_manifest on every supported layout."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from speaker.io.manifest import Manifest
from speaker.io.paths import DataPaths, data_options, load_manifest
from store.errors import UserError


def test_data_root_fills_every_path(toy_corpus: Path):
    paths = DataPaths(data=toy_corpus)
    train = paths.train_manifest()
    assert len(train) == 32 and len(train.speakers) == 8
    manifest, trials = paths.test_set()
    assert len(manifest) == 16 and len(trials) == 48
    assert paths.has_test
    bank = paths.noise_bank(16000)
    assert set(bank.available()) == {"reverb", "noise", "music", "babble"}


def test_explicit_paths_override_the_root(toy_corpus: Path, tmp_path: Path):
    # a root whose train/ and trials differ from the explicit ones
    other_train = Manifest.read(toy_corpus / "train" / "manifest.jsonl")
    Manifest(list(other_train)[:4]).write(tmp_path / "small.jsonl")
    trials = tmp_path / "trials.txt"
    lines = (toy_corpus / "test" / "trials.txt").read_text().splitlines()
    trials.write_text("\n".join(lines[:5]) + "\n")
    paths = DataPaths(data=toy_corpus, train=tmp_path / "small.jsonl", trials=trials)
    assert len(paths.train_manifest()) == 4
    manifest, got = paths.test_set()
    assert len(manifest) == 16 and len(got) == 5  # test manifest still from the root


def test_no_root_no_paths(tmp_path: Path):
    paths = DataPaths()
    assert not paths.has_test
    with pytest.raises(UserError, match=r"no --train given \(or --data DIR containing "):
        paths.train_manifest()
    with pytest.raises(UserError, match="no --test given"):
        paths.test_set()
    assert paths.noise_bank(16000).available() == ()
    # a root without test/: training only
    (tmp_path / "train").mkdir()
    assert not DataPaths(data=tmp_path).has_test


def test_missing_trials_with_test(toy_corpus: Path, tmp_path: Path):
    paths = DataPaths(test=toy_corpus / "test" / "manifest.jsonl")
    with pytest.raises(UserError, match="no --trials given"):
        paths.test_set()


def test_to_dict_is_absolute(toy_corpus: Path, monkeypatch):
    monkeypatch.chdir(toy_corpus)
    d = DataPaths(data=Path("."), train=Path("train/manifest.jsonl")).to_dict()
    assert d["train"] == os.path.join(os.getcwd(), "train", "manifest.jsonl")
    assert d["data"] == os.getcwd()
    assert d["test"] is None


def test_load_manifest_layouts(toy_corpus: Path, tmp_path: Path):
    reference = Manifest.read(toy_corpus / "train" / "manifest.jsonl")
    key = [(u.id, u.speaker, u.num_samples) for u in reference]

    def same(m: Manifest) -> None:
        assert [(u.id, u.speaker, u.num_samples) for u in m] == key
        assert all(Path(u.path).is_file() for u in m)

    same(load_manifest(toy_corpus / "train" / "manifest.jsonl"))  # a .jsonl file
    same(load_manifest(toy_corpus / "train"))  # a dir holding manifest.jsonl
    same(load_manifest(toy_corpus / "train" / "wav"))  # a VoxCeleb tree
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("".join(f"{u.id} {u.path}\n" for u in reference))
    (kaldi / "utt2spk").write_text("".join(f"{u.id} {u.speaker}\n" for u in reference))
    same(load_manifest(kaldi))  # a Kaldi data dir


def test_load_manifest_errors(tmp_path: Path):
    with pytest.raises(UserError, match=r"no such manifest file, Kaldi data dir or VoxCeleb"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(UserError, match="no .wav/.flac files"):
        load_manifest(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:1: not valid JSON"):
        load_manifest(bad)


def test_data_options_pop_into_data_paths(toy_corpus: Path):
    seen = {}

    @click.command()
    @data_options
    @click.option("--other", default=1)
    def command(**opts):
        seen["paths"] = DataPaths.from_options(opts)
        seen["rest"] = opts

    result = CliRunner().invoke(command, ["--data", str(toy_corpus), "--musan",
                                          str(toy_corpus / "musan")])
    assert result.exit_code == 0, result.output
    assert seen["paths"] == DataPaths(data=toy_corpus, musan=toy_corpus / "musan")
    assert seen["rest"] == {"other": 1}
    result = CliRunner().invoke(command, ["--train", str(toy_corpus / "nope.jsonl")])
    assert result.exit_code == 2 and "does not exist" in result.output
