"""Deterministic synthetic multi-speaker corpus, laid out like VoxCeleb + MUSAN + RIRS_NOISES.

``python -m speaker.toy --speakers 200 --seed 0 --out toy`` writes::

    toy/README.txt                 generation parameters (the same arguments give the same bytes)
    toy/toy.json                   the same parameters, machine-readable
    toy/train/wav/<spk>/<video>/<nnnnn>.wav      16-bit PCM (absent with --pack)
    toy/train/audio.h5             HDF5 pack of the same audio (only with --pack)
    toy/train/manifest.jsonl       Manifest.read() resolves its relative paths against its folder
    toy/train/wav.scp              "<utt> wav/<utt>" - paths relative to toy/train (absent with --pack)
    toy/train/utt2spk  spk2utt  utt2num_samples  speakers.tsv (speaker, population, family)
    toy/dev/...  toy/dev/trials.txt  the same for dev speakers (choosing settings; --dev-speakers)
    toy/test/...                   the same for held-out speakers, plus
    toy/test/trials.txt            "1 id90000/<video>/00001.wav id90000/<video>/00002.wav" (VoxCeleb)
    toy/musan/{noise,music,speech}/*.wav   coloured noises, synthetic music, single-voice babble
    toy/rirs/*.wav                 exponentially decaying room responses, RT60 0.2-0.8 s

Utterance ids are VoxCeleb paths relative to ``wav/`` (``id00012/xK3_9aZq-Lw/00001.wav``);
training speakers are ``id00000``... in index order, dev speakers ``id80000``..., test speakers
``id90000``... (all three disjoint, like VoxCeleb1-O), babble voices are indices from 100000 on.

**Signal model.** Speakers come from a hierarchy: ``populations`` clusters, each with
``families`` sub-clusters; a speaker's parameter vector (in standardised units) is
``population_spread * c_pop + family_spread * c_family + speaker_spread * c_own`` with
independent standard normal ``c`` (family = index mod populations*families, so every family
keeps growing as speakers are added). The vector sets mean pitch and pitch range,
vocal-tract length (all formants scaled together, correlated with pitch across populations),
formant bandwidths, glottal spectral tilt, jitter, shimmer, aspiration noise, speaking rate,
a fixed pole/zero "fingerprint" resonance, a nasal anti-resonance, high-formant offsets and
per-vowel F1/F2 offsets (an accent: shared within families and populations). An utterance is
a random sequence of syllables from a shared phone inventory (10 vowels, nasals, approximants,
fricatives) with smoothed formant glides, a wandering and declining pitch contour and pauses,
synthesised as a pulse train plus aspiration noise and a frication noise stream, each filtered
by a per-frame spectral envelope (16 ms hop, overlap-add). Recording conditions vary per
video (4 utterances per video) and slightly per utterance: voice state (pitch, rate, tilt,
breathiness), an EQ tilt and bump, sometimes a band limit, level, and coloured background
noise at an SNR around ``snr_db``. ``session_variation`` scales all of that.

**Determinism.** Every random draw comes from ``numpy.random.Generator(PCG64(SeedSequence(
[seed, tag, ...])))``: the tag says what is drawn (population or family centre, speaker,
video, utterance, trial list, noise bank) and the rest which one, e.g. utterance ``u`` of
speaker ``i`` uses ``[seed, 4, i, u]``. So any speaker or utterance can be synthesised alone
(:func:`synthesize_utterance`), speakers in any order or process, and a corpus with more
speakers or utterances contains the smaller one's audio. Files carry no timestamps or
absolute paths.

Example::

    python -m speaker.toy --speakers 200 --seed 0 --out toy
    python -m speaker.toy --speakers 2000 --utts-per-speaker 8 --pack --workers 2 --out toy2k
    python -m speaker.toy --speakers 6 --utts-per-speaker 3 --duration 1 --test-speakers 3 \\
        --out /tmp/tiny
"""


from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from speaker.io.manifest import Manifest, Utterance
from speaker.toy.config import (
    DEV_BASE,
    FORMAT_VERSION,
    TAG_DEV_TRIALS,
    TAG_TRIALS,
    TEST_BASE,
    ToyConfig,
    family_of,
    speaker_id,
    tagged_rng,
)
from speaker.toy.noise import (
    BABBLE_FILES,
    BABBLE_SECONDS,
    MUSIC_FILES,
    MUSIC_SECONDS,
    NOISE_FILES,
    NOISE_SECONDS,
    RIR_FILES,
    babble_recording,
    music_recording,
    noise_recording,
    room_response,
)
from speaker.toy.voice import quantise, synthesize_utterance
from store.atomic import atomic_dir, atomic_write_text
from store.errors import UserError

logger = logging.getLogger("speaker.toy")  # also when run as __main__

# ---- trials --------------------------------------------------------------------------------


def _trials(cfg: ToyConfig, ids_by_speaker: dict[int, list[str]], tag: int = TAG_TRIALS
            ) -> list[str]:
    """Every same-speaker pair once (enrol = the smaller id), each followed by a non-target
    with the same enrolment: cycling through same family, same population (other family)
    and other population, as far as the held-out speakers allow. ``tag`` seeds the
    non-target draws (test and dev lists draw independently)."""
    rng = tagged_rng(cfg.seed, tag)
    speakers = sorted(ids_by_speaker)
    fam = {s: family_of(cfg, s) for s in speakers}
    groups: dict[int, list[list[int]]] = {}
    for s in speakers:
        others = [o for o in speakers if o != s]
        groups[s] = [
            [o for o in others if fam[o][1] == fam[s][1]],
            [o for o in others if fam[o][0] == fam[s][0] and fam[o][1] != fam[s][1]],
            [o for o in others if fam[o][0] != fam[s][0]],
        ]
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    count = 0
    for s in speakers:
        ids = sorted(ids_by_speaker[s])
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                enroll = ids[a]
                lines.append(f"1 {enroll} {ids[b]}")
                category = count % 3
                count += 1
                pool = next(g for g in (groups[s][category:] + groups[s][:category]) if g)
                for _ in range(50):  # avoid repeating a non-target pair
                    o = pool[int(rng.integers(len(pool)))]
                    test = ids_by_speaker[o][int(rng.integers(len(ids_by_speaker[o])))]
                    if (enroll, test) not in seen:
                        break
                seen.add((enroll, test))
                lines.append(f"0 {enroll} {test}")
    return lines


# ---- writing the corpus --------------------------------------------------------------------


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    # Encoded in memory (the same bytes), so a full or read-only disk fails as an OSError
    # naming the file; libsndfile's own writes fail with a bare "System error.".
    buf = io.BytesIO()
    soundfile.write(buf, audio, sr, subtype="PCM_16", format="WAV")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _speaker_job(args: tuple[ToyConfig, int, int, str | None]
                 ) -> list[tuple[str, np.ndarray | None, int]]:
    """Synthesise one speaker; write its wavs under ``wav_root`` or return the audio."""
    cfg, index, n_utts, wav_root = args
    out = []
    for u in range(n_utts):
        uid, audio = synthesize_utterance(cfg, index, u)
        if wav_root is not None:
            _write_wav(Path(wav_root) / uid, audio, cfg.sample_rate)
            out.append((uid, None, audio.size))
        else:
            out.append((uid, audio, audio.size))
    return out


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_set(cfg: ToyConfig, root: Path, indices: list[int], n_utts: int, imap: Any,
               desc: str) -> dict[int, list[str]]:
    """One data directory (train/, dev/ or test/); -> {speaker index: utterance ids}."""
    from tqdm import tqdm

    root.mkdir(parents=True)
    wav_root = None if cfg.pack else str(root / "wav")
    jobs = [(cfg, i, n_utts, wav_root) for i in indices]
    results: dict[str, int] = {}
    ids_by_speaker: dict[int, list[str]] = {}

    def stream() -> Iterator[tuple[str, np.ndarray]]:
        bar = tqdm(imap(_speaker_job, jobs), total=len(jobs), desc=desc, unit="spk",
                   disable=None)
        for index, utts in zip(indices, bar, strict=True):
            ids_by_speaker[index] = [uid for uid, _, _ in utts]
            for uid, audio, n in utts:
                results[uid] = n
                if audio is not None:
                    yield uid, audio

    if cfg.pack:
        from speaker.io.audio import write_pack

        write_pack(root / "audio.h5", stream(), cfg.sample_rate)
    else:
        for _ in stream():
            pass
    ids = sorted(results)
    speaker_of = {uid: uid.split("/", 1)[0] for uid in ids}
    utts = [
        Utterance(uid, speaker_of[uid], "audio.h5" if cfg.pack else f"wav/{uid}",
                  results[uid], cfg.sample_rate, uid if cfg.pack else None)
        for uid in ids
    ]
    Manifest(utts, source=str(root)).write(root / "manifest.jsonl")
    if not cfg.pack:
        _write_lines(root / "wav.scp", [f"{uid} wav/{uid}" for uid in ids])
    _write_lines(root / "utt2spk", [f"{uid} {speaker_of[uid]}" for uid in ids])
    _write_lines(root / "utt2num_samples", [f"{uid} {results[uid]}" for uid in ids])
    _write_lines(root / "spk2utt", [
        f"{speaker_id(i)} " + " ".join(sorted(ids_by_speaker[i])) for i in sorted(indices)])
    _write_lines(root / "speakers.tsv", ["speaker\tpopulation\tfamily"] + [
        f"{speaker_id(i)}\t{family_of(cfg, i)[0]}\t{family_of(cfg, i)[1]}"
        for i in sorted(indices)])
    return ids_by_speaker


def _write_bank(cfg: ToyConfig, out: Path) -> list[float]:
    sr = cfg.sample_rate
    for sub, count, make in [
        ("noise", NOISE_FILES, lambda i: noise_recording(cfg.seed, i, sr)),
        ("music", MUSIC_FILES, lambda i: music_recording(cfg.seed, i, sr)),
        ("speech", BABBLE_FILES, lambda i: babble_recording(cfg, i)),
    ]:
        for i in range(count):
            _write_wav(out / "musan" / sub / f"{sub}-{i:04d}.wav", quantise(make(i)), sr)
    rt60s = []
    for i in range(RIR_FILES):
        h, rt60 = room_response(cfg.seed, i, sr)
        _write_wav(out / "rirs" / f"rir-{i:04d}.wav", quantise(h), sr)
        rt60s.append(rt60)
    return rt60s


_README = """\
Synthetic speaker-verification corpus written by `python -m speaker.toy` (entkd), format
version {version}. Every byte is a function of the parameters below: rerunning with them
(and the same numpy, libsndfile and h5py) reproduces this directory exactly, whatever the
number of worker processes.

Parameters
{params}

Contents
  train/  {n_train} speakers (id{first_train:05d}..), {train_utts} utterances
  dev/    {n_dev} held-out speakers (id{first_dev:05d}..), {dev_utts} utterances,
          trials.txt with {n_dev_trials} trials drawn like test's: for choosing settings
          (absent when there are no dev speakers)
  test/   {n_test} held-out speakers (id{first_test:05d}..), {test_utts} utterances,
          trials.txt with {n_trials} trials (half target; non-targets cycle through same
          family, same population and other population as far as the speakers allow)
  musan/noise   {noise} coloured/modulated noises of {noise_s:g} s
  musan/music   {music} synthetic music clips of {music_s:g} s
  musan/speech  {babble} clean single synthetic voices of {babble_s:g} s (not in train/test)
  rirs/         {rirs} room impulse responses, RT60 {rt_min:.2f}-{rt_max:.2f} s

Each data directory holds manifest.jsonl (paths relative to that directory, which is how
speaker.io.manifest.Manifest.read resolves them), Kaldi-style utt2spk, spk2utt, utt2num_samples
and (without --pack) wav.scp with paths relative to the data directory, the VoxCeleb tree
wav/<speaker>/<video>/<nnnnn>.wav (16-bit PCM, {sample_rate} Hz) or, with --pack,
audio.h5 (one int16 dataset per utterance id), and speakers.tsv giving each speaker's
population and family. Utterance ids are the VoxCeleb relative paths.

Signal model: hierarchical speakers (population -> family -> speaker) controlling pitch,
vocal-tract length, formant bandwidths, spectral tilt, jitter, shimmer, breathiness,
speaking rate, a fingerprint resonance/anti-resonance, nasal anti-resonance, high-formant
and per-vowel accent offsets; utterances are random syllable strings from a shared phone
inventory with formant glides, pitch contour and pauses; recording conditions (EQ, band
limit, level, coloured background noise at ~snr_db) vary per video of 4 utterances and
slightly per utterance. See the docstring of speaker/toy/corpus.py for the seeding scheme.
"""


def generate(cfg: ToyConfig, out: str | os.PathLike[str], workers: int = 1,
             force: bool = False) -> None:
    """Write the corpus to ``out`` (staged next to it and renamed into place when complete,
    :func:`store.atomic.atomic_dir`: a full disk or an interrupt leaves nothing behind).

    An existing non-empty ``out`` is a :class:`UserError` unless ``force`` (then it is
    replaced once the new corpus is complete).

    Example::

        >>> generate(ToyConfig(speakers=6, utts_per_speaker=3, duration=1.0, test_speakers=3),
        ...          "/tmp/tiny", force=True)   # doctest: +SKIP
    """
    out = Path(out)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise UserError(f"{out} already exists and is not empty; remove it or pass --force")
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        with atomic_dir(out) as stage:
            imap = pool.imap if pool is not None else map
            train = list(range(cfg.speakers))
            test = [TEST_BASE + j for j in range(cfg.test_speakers)]
            logger.info("synthesising %d training speakers x %d utterances", len(train),
                        cfg.utts_per_speaker)
            _write_set(cfg, stage / "train", train, cfg.utts_per_speaker, imap, "train")
            logger.info("synthesising %d test speakers x %d utterances", len(test), cfg.test_utts)
            test_ids = _write_set(cfg, stage / "test", test, cfg.test_utts, imap, "test")
            trials = _trials(cfg, test_ids)
            _write_lines(stage / "test" / "trials.txt", trials)
            n_dev_trials = 0
            if cfg.dev_speakers:
                dev = [DEV_BASE + j for j in range(cfg.dev_speakers)]
                logger.info("synthesising %d dev speakers x %d utterances", len(dev),
                            cfg.test_utts)
                dev_ids = _write_set(cfg, stage / "dev", dev, cfg.test_utts, imap, "dev")
                dev_trials = _trials(cfg, dev_ids, TAG_DEV_TRIALS)
                _write_lines(stage / "dev" / "trials.txt", dev_trials)
                n_dev_trials = len(dev_trials)
            logger.info("writing the noise bank and RIRs")
            rt60s = _write_bank(cfg, stage)
            params = cfg.to_dict()
            atomic_write_text(stage / "toy.json", json.dumps(
                {"format_version": FORMAT_VERSION, **params}, indent=2, sort_keys=True) + "\n")
            width = max(len(k) for k in params)
            atomic_write_text(stage / "README.txt", _README.format(
                version=FORMAT_VERSION,
                params="\n".join(f"  {k:<{width}}  {v}" for k, v in params.items()),
                n_train=cfg.speakers, first_train=0, train_utts=cfg.speakers * cfg.utts_per_speaker,
                n_dev=cfg.dev_speakers, first_dev=DEV_BASE,
                dev_utts=cfg.dev_speakers * cfg.test_utts, n_dev_trials=n_dev_trials,
                n_test=cfg.test_speakers, first_test=TEST_BASE,
                test_utts=cfg.test_speakers * cfg.test_utts, n_trials=len(trials),
                noise=NOISE_FILES, noise_s=NOISE_SECONDS, music=MUSIC_FILES, music_s=MUSIC_SECONDS,
                babble=BABBLE_FILES, babble_s=BABBLE_SECONDS, rirs=RIR_FILES,
                rt_min=min(rt60s), rt_max=max(rt60s), sample_rate=cfg.sample_rate,
            ))
    finally:
        if pool is not None:
            pool.terminate()
    logger.info("wrote %s", out)
