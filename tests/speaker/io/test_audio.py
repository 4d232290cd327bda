"""Audio loading, crop reads, repeat-padding, HDF5 packs and their error paths."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile

from speaker.io.audio import AudioReader, load_audio, write_pack
from speaker.io.manifest import Manifest, Utterance
from store.errors import UserError

RATE = 16000


def _wav(path: Path, n: int, rate: int = RATE, seed: int = 0, channels: int = 1) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    soundfile.write(path, x, rate, subtype="PCM_16")
    return soundfile.read(path, dtype="float32", always_2d=True)[0][:, 0]


def _utt(path: Path, n: int, **kw) -> Utterance:
    return Utterance(kw.pop("id", path.name), "spk", str(path), n, RATE, **kw)


def test_load_audio_mono_float32(tmp_path):
    want = _wav(tmp_path / "a.wav", 1234)
    got = load_audio(tmp_path / "a.wav", RATE)
    assert got.dtype == np.float32 and got.shape == (1234,)
    np.testing.assert_array_equal(got, want)
    assert np.abs(got).max() <= 1.0


def test_multichannel_keeps_first_channel(tmp_path):
    first = _wav(tmp_path / "st.wav", 500, channels=2)
    np.testing.assert_array_equal(load_audio(tmp_path / "st.wav", RATE), first)


def test_missing_and_corrupt_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"cannot read audio .*nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav", RATE)
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"\x00garbage bytes\xff" * 20)
    with pytest.raises(UserError, match=rf"cannot read audio {bad}: "):
        load_audio(bad, RATE)
    reader = AudioReader(RATE)
    with pytest.raises(UserError, match=rf"cannot read audio {bad}"):
        reader.read(_utt(bad, 100), 0, 50)
    with pytest.raises(UserError, match="no such file"):
        reader.read(_utt(tmp_path / "gone.wav", 100), 0, 50)


def test_wrong_sample_rate_is_resampled(tmp_path):
    _wav(tmp_path / "id1" / "v" / "lo.wav", 4000, rate=8000)
    wave = load_audio(tmp_path / "id1" / "v" / "lo.wav", RATE)
    assert wave.shape == (8000,) and wave.dtype == np.float32
    utt = Manifest.from_voxceleb(tmp_path)[0]
    assert utt.num_samples == 8000
    reader = AudioReader(RATE)
    np.testing.assert_array_equal(reader.read(utt), wave)
    np.testing.assert_array_equal(reader.read(utt, 100, 3000), wave[100:3100])


def test_reader_crops_equal_whole_file_slices(tmp_path):
    wave = _wav(tmp_path / "a.wav", 5000)
    utt = _utt(tmp_path / "a.wav", 5000)
    reader = AudioReader(RATE)
    np.testing.assert_array_equal(reader.read(utt), wave)
    np.testing.assert_array_equal(reader.read(utt, 1000, 2500), wave[1000:3500])
    np.testing.assert_array_equal(reader.read(utt, 4000), wave[4000:])
    assert reader.read(utt, 0, 0).shape == (0,)


def test_short_utterance_is_repeat_padded(tmp_path):
    wave = _wav(tmp_path / "short.wav", 700)
    utt = _utt(tmp_path / "short.wav", 700)
    got = AudioReader(RATE).read(utt, 0, 2000)
    assert got.shape == (2000,) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.tile(wave, 3)[:2000])
    got = AudioReader(RATE).read(utt, 600, 300)  # runs past the end: wraps around
    np.testing.assert_array_equal(got, np.concatenate([wave[600:], wave[:200]]))


def test_reader_rejects_manifest_at_other_rate(tmp_path):
    _wav(tmp_path / "a.wav", 100)
    utt = Utterance("a", "s", str(tmp_path / "a.wav"), 50, 8000)
    with pytest.raises(UserError, match="listed at 8000 Hz"):
        AudioReader(RATE).read(utt)


def _pack_fixture(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    waves = {
        "id1/vA/00001.wav": _wav(tmp_path / "f1.wav", 3000, seed=1),
        "id1/vA/00002.wav": _wav(tmp_path / "f2.wav", 500, seed=2),
        "id2/vB/00001.wav": _wav(tmp_path / "f3.wav", 4000, seed=3),
    }
    pack = tmp_path / "pack.h5"
    write_pack(
        pack, ((k, load_audio(tmp_path / f"f{i}.wav", RATE)) for i, k in enumerate(waves, 1)), RATE
    )
    return pack, waves


def test_pack_reads_equal_file_reads(tmp_path):
    pack, waves = _pack_fixture(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1.wav", "f2.wav", "f3.wav", "pack.h5"]
    with h5py.File(pack) as f:
        assert f.attrs["sample_rate"] == RATE
        assert f["id1/vA/00001.wav"].dtype == np.int16
    reader = AudioReader(RATE)
    for i, (key, wave) in enumerate(waves.items(), 1):
        packed = Utterance(key, key.split("/")[0], str(pack), len(wave), RATE, key=key)
        filed = _utt(tmp_path / f"f{i}.wav", len(wave))
        for start, length in [(0, None), (100, 400), (50, 2500), (0, 9000)]:
            got = reader.read(packed, start, length)
            np.testing.assert_array_equal(got, reader.read(filed, start, length))
            assert got.dtype == np.float32
    reader.close()


def test_pack_errors_and_atomicity(tmp_path):
    pack, waves = _pack_fixture(tmp_path)
    before = pack.read_bytes()
    with pytest.raises(UserError, match="duplicate utterance id 'a'"):
        write_pack(pack, [("a", np.zeros(10)), ("a", np.zeros(10))], RATE)
    assert pack.read_bytes() == before  # the old pack survives a failed rewrite
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(UserError, match="non-empty 1-D"):
        write_pack(tmp_path / "e.h5", [("a", np.zeros(0))], RATE)
    assert not (tmp_path / "e.h5").exists()
    reader = AudioReader(RATE)
    with pytest.raises(UserError, match=r"pack\.h5\[nope\]: no such dataset"):
        reader.read(Utterance("nope", "s", str(pack), 10, RATE, key="nope"))
    with pytest.raises(UserError, match="cannot read audio"):
        reader.read(Utterance("x", "s", str(tmp_path / "f1.wav"), 10, RATE, key="x"))


def test_pack_at_other_rate_is_resampled(tmp_path):
    pack = tmp_path / "lo.h5"
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32)
    write_pack(pack, [("a", wave)], 8000)
    got = AudioReader(RATE).read(Utterance("a", "s", str(pack), 8000, RATE, key="a"), 0, 8000)
    assert got.shape == (8000,)


def _child_read(reader: AudioReader, utt: Utterance, queue) -> None:
    queue.put(reader.read(utt, 10, 20).tolist())


def test_reader_reopens_packs_after_fork_and_pickles(tmp_path):
    pack, waves = _pack_fixture(tmp_path)
    key = "id2/vB/00001.wav"
    utt = Utterance(key, "id2", str(pack), 4000, RATE, key=key)
    reader = AudioReader(RATE)
    want = reader.read(utt, 10, 20)  # parent opens the pack
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(reader, utt, queue))
    proc.start()
    got = queue.get(timeout=30)
    proc.join(timeout=30)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(np.array(got, np.float32), want)
    np.testing.assert_array_equal(reader.read(utt, 10, 20), want)  # parent handle still fine
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(utt, 10, 20), want)
