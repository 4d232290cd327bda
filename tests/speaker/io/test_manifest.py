"""Manifests, label maps and trial lists: round trips, corpus layouts, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speaker.io.manifest import LabelMap, Manifest, Trial, Utterance, read_trials
from store.errors import UserError


def _wav(path: Path, n: int, rate: int = 16000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)
    soundfile.write(path, x, rate, subtype="PCM_16")
    return path


def _manifest() -> Manifest:
    return Manifest(
        [
            Utterance("s1/v/1.wav", "s1", "/abs/s1/v/1.wav", 16000, 16000),
            Utterance("s2/v/1.wav", "s2", "/abs/pack.h5", 8000, 16000, key="s2/v/1.wav"),
            Utterance("s1/w/2.wav", "s1", "/abs/s1/w/2.wav", 24000, 16000),
        ]
    )


def test_manifest_basics_and_jsonl_round_trip(tmp_path):
    m = _manifest()
    assert len(m) == 3 and m[1].key == "s2/v/1.wav"
    assert m.ids == ["s1/v/1.wav", "s2/v/1.wav", "s1/w/2.wav"]
    assert m.speakers == ["s1", "s2"]
    assert m.index_of("s1/w/2.wav") == 2
    assert list(m) == list(m.utterances)
    with pytest.raises(UserError, match="unknown utterance id 'nope'"):
        m.index_of("nope")
    path = tmp_path / "sub" / "m.jsonl"
    m.write(path)
    assert [p.name for p in path.parent.iterdir()] == ["m.jsonl"]  # no temp file left
    back = Manifest.read(path)
    assert back.utterances == m.utterances
    assert back.content_hash() == m.content_hash()


def test_content_hash_is_canonical_and_order_sensitive():
    m = _manifest()
    h = m.content_hash()
    assert len(h) == 64 and h == _manifest().content_hash()
    assert Manifest(reversed(m.utterances)).content_hash() != h
    moved = Manifest(Utterance(u.id, u.speaker, "/elsewhere", u.num_samples, 16000) for u in m)
    assert moved.content_hash() == h  # paths do not matter
    longer = Manifest([*m.utterances[:2], Utterance("s1/w/2.wav", "s1", "x", 24001, 16000)])
    assert longer.content_hash() != h


def test_read_resolves_relative_paths_against_manifest_dir(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps(
            {"id": "a", "speaker": "s", "path": "wav/a.wav", "num_samples": 5, "sample_rate": 16000}
        )
        + "\n"
    )
    assert Manifest.read(tmp_path / "m.jsonl")[0].path == str(tmp_path / "wav" / "a.wav")


def test_duplicate_ids_are_user_errors(tmp_path):
    u = Utterance("a", "s", "a.wav", 1, 16000)
    with pytest.raises(UserError, match="duplicate utterance id 'a'"):
        Manifest([u, u])
    path = tmp_path / "m.jsonl"
    line = json.dumps(u.to_dict())
    path.write_text(f"{line}\n\n{line}\n")
    with pytest.raises(
        UserError, match=r"m\.jsonl:3: duplicate utterance id 'a' \(first at line 1\)"
    ):
        Manifest.read(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"id": "a"}', "missing field 'speaker'"),
        (
            '{"id": "a", "speaker": "s", "path": "p", "num_samples": "9", "sample_rate": 1}',
            "wrong type",
        ),
        (
            '{"id": "a", "speaker": "s", "path": "p", "num_samples": 9, "sample_rate": 1, "x": 1}',
            "unknown",
        ),
    ],
)
def test_malformed_manifest_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=rf"bad\.jsonl:1: .*{message}"):
        Manifest.read(path)


def test_missing_manifest_file(tmp_path):
    with pytest.raises(UserError, match="cannot read manifest"):
        Manifest.read(tmp_path / "nope.jsonl")


def test_from_voxceleb_tree(tmp_path):
    root = tmp_path / "wav"
    _wav(root / "id002" / "vidB" / "00001.wav", 1000)
    _wav(root / "id001" / "vidA" / "00002.wav", 1200)
    _wav(root / "id001" / "vidA" / "00001.wav", 1100)
    _wav(root / "id001" / "vidC" / "00001.wav", 400, rate=8000)  # resampled when read
    (root / "README.txt").write_text("not audio")
    m = Manifest.from_voxceleb(root)
    assert m.ids == [
        "id001/vidA/00001.wav",
        "id001/vidA/00002.wav",
        "id001/vidC/00001.wav",
        "id002/vidB/00001.wav",
    ]
    assert [u.speaker for u in m] == ["id001", "id001", "id001", "id002"]
    assert [u.num_samples for u in m] == [1100, 1200, 800, 1000]
    assert m[0].path == str(root / "id001" / "vidA" / "00001.wav")
    assert {u.sample_rate for u in m} == {16000}


def test_from_voxceleb_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        Manifest.from_voxceleb(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .wav/.flac files"):
        Manifest.from_voxceleb(tmp_path / "empty")
    _wav(tmp_path / "flat" / "a.wav", 100)
    with pytest.raises(UserError, match="directly under the root"):
        Manifest.from_voxceleb(tmp_path / "flat")
    bad = tmp_path / "corrupt" / "id1" / "v" / "x.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"RIFF garbage" * 10)
    with pytest.raises(UserError, match=f"cannot read audio {bad}"):
        Manifest.from_voxceleb(tmp_path / "corrupt")


def _kaldi_dir(tmp_path: Path, scp: str, utt2spk: str) -> Path:
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(scp)
    (d / "utt2spk").write_text(utt2spk)
    return d


def test_from_kaldi(tmp_path):
    a = _wav(tmp_path / "a.wav", 700)
    b = _wav(tmp_path / "b.wav", 900)
    d = _kaldi_dir(tmp_path, f"u2 {b}\nu1 {a}\n", "u1 spkA\nu2 spkB\nu9 spkC\n")
    m = Manifest.from_kaldi(d)
    assert m.ids == ["u2", "u1"]  # wav.scp order
    assert [(u.speaker, u.num_samples, u.path) for u in m] == [
        ("spkB", 900, str(b)),
        ("spkA", 700, str(a)),
    ]
    (d / "utt2num_samples").write_text("u1 123\nu2 456\n")
    assert [u.num_samples for u in Manifest.from_kaldi(d)] == [456, 123]
    (d / "utt2num_samples").write_text("u1 12x\n")
    with pytest.raises(UserError, match=r"utt2num_samples:1: '12x'"):
        Manifest.from_kaldi(d)


def test_from_kaldi_errors(tmp_path):
    a = _wav(tmp_path / "a.wav", 700)
    d = _kaldi_dir(tmp_path, f"u1 {a}\nu2 sox x.wav -t wav - |\n", "u1 s\nu2 s\n")
    with pytest.raises(UserError, match=r"wav\.scp:2: piped command for 'u2' is not supported"):
        Manifest.from_kaldi(d)
    (d / "wav.scp").write_text(f"u1 {a}\nu2 {a}\n")
    (d / "utt2spk").write_text("u1 s\n")
    with pytest.raises(UserError, match=r"wav\.scp:2: utterance 'u2' has no speaker"):
        Manifest.from_kaldi(d)
    (d / "wav.scp").write_text(f"u1 {a}\nu1 {a}\n")
    with pytest.raises(UserError, match=r"wav\.scp:2: duplicate utterance id 'u1'"):
        Manifest.from_kaldi(d)
    (d / "wav.scp").write_text(f"u1 {tmp_path / 'gone.wav'}\n")
    # the list file and line as well as the path
    with pytest.raises(UserError, match=r"wav\.scp:1: audio .*gone\.wav of utterance 'u1' "
                                        "does not exist"):
        Manifest.from_kaldi(d)
    (d / "utt2num_samples").write_text("u1 16000\n")  # no header read: still found
    with pytest.raises(UserError, match=r"wav\.scp:1: audio .*gone\.wav"):
        Manifest.from_kaldi(d)
    (d / "utt2num_samples").unlink()
    (d / "segments").write_text("u1 rec 0 1\n")
    with pytest.raises(UserError, match="segments are not supported"):
        Manifest.from_kaldi(d)
    with pytest.raises(UserError, match="cannot read"):
        Manifest.from_kaldi(tmp_path / "nowhere")


def test_label_map():
    lm = LabelMap.from_manifest(_manifest(), speeds=(1.0, 0.9, 1.1))
    assert lm.speakers == ("s1", "s2") and lm.num_classes == 6
    assert lm.index("s1") == 0 and lm.index("s2", 0.9) == 3 and lm.index("s2", 1.1) == 5
    assert [lm.decode(i) for i in range(6)] == [
        ("s1", 1.0), ("s2", 1.0), ("s1", 0.9), ("s2", 0.9), ("s1", 1.1), ("s2", 1.1)
    ]  # fmt: skip
    assert LabelMap.from_dict(json.loads(json.dumps(lm.to_dict()))) == lm
    with pytest.raises(UserError, match="speaker 'zz'"):
        lm.index("zz")
    with pytest.raises(UserError, match="speed 1.2"):
        lm.index("s1", 1.2)
    with pytest.raises(UserError):
        LabelMap(("a", "a"))
    with pytest.raises(UserError):
        LabelMap.from_dict({"speeds": [1.0]})


def test_read_trials_both_formats(tmp_path):
    vox = tmp_path / "veri.txt"
    vox.write_text("1 a/x.wav b/y.wav\n0 a/x.wav c/z.wav\n\n")
    kaldi = tmp_path / "trials"
    kaldi.write_text("a/x.wav b/y.wav target\na/x.wav c/z.wav nontarget\n")
    want = [Trial(True, "a/x.wav", "b/y.wav"), Trial(False, "a/x.wav", "c/z.wav")]
    ids = ["a/x.wav", "b/y.wav", "c/z.wav"]
    assert read_trials(vox) == want
    assert read_trials(kaldi, known_ids=ids) == want


def test_read_trials_errors(tmp_path):
    t = tmp_path / "veri.txt"
    t.write_text("1 a b\n0 a nobody\n")
    with pytest.raises(UserError, match=r"veri\.txt:2: unknown utterance id 'nobody'"):
        read_trials(t, known_ids={"a", "b"})
    t.write_text("1 a b\nyes a b\n")
    with pytest.raises(UserError, match=r"veri\.txt:2: expected"):
        read_trials(t)
    t.write_text("\n")
    with pytest.raises(UserError, match="no trials"):
        read_trials(t)
    with pytest.raises(UserError, match="cannot read trial list"):
        read_trials(tmp_path / "missing.txt")


def test_relative_corpus_paths_are_stored_absolute(tmp_path, monkeypatch):
    _wav(tmp_path / "vox" / "id1" / "v" / "1.wav", 100)
    d = _kaldi_dir(tmp_path, "u1 vox/id1/v/1.wav\n", "u1 id1\n")
    monkeypatch.chdir(tmp_path)
    want = str(tmp_path / "vox" / "id1" / "v" / "1.wav")
    assert Manifest.from_kaldi("data/train")[0].path == want
    assert Manifest.from_voxceleb("vox")[0].path == want
    Manifest.from_kaldi(d).write(tmp_path / "elsewhere" / "m.jsonl")
    assert Manifest.read(tmp_path / "elsewhere" / "m.jsonl")[0].path == want
