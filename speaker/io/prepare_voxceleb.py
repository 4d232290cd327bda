"""Prepare a VoxCeleb data root for ``--data``: manifests, trial list, MUSAN and RIR links.

Writes the layout :mod:`speaker.io.paths` expects::

    ROOT/train/manifest.jsonl   VoxCeleb2 dev (or any VoxCeleb-style tree), sorted by id
    ROOT/test/manifest.jsonl    the VoxCeleb1 utterances that the trial list names
    ROOT/test/trials.txt        the trial list, "1 id10270/x/00001.wav id10270/y/00002.wav"
    ROOT/dev/manifest.jsonl     with --dev-speakers N: N training speakers carved out (they
    ROOT/dev/trials.txt         leave train/), with a seeded trial list of their own
    ROOT/musan -> MUSAN         symlink (noise/, music/, speech/)
    ROOT/rirs -> RIRS_NOISES    symlink (only simulated_rirs/ is used when present)
    ROOT/prepared.json          sources and counts

Without ``--pack`` the manifests point at the source audio (absolute paths). With
``--pack`` the audio is copied into ``ROOT/train/audio.h5`` and ``ROOT/test/audio.h5``
(int16 HDF5 packs: a random crop reads only its own bytes; see
:func:`speaker.io.audio.write_pack`) and the manifests point into them, relative to ROOT,
so the root can be moved. The root is built next to ROOT and renamed into place when
complete, so an interrupted run never leaves a root that looks prepared.

Audio must be readable by soundfile (wav/flac). VoxCeleb1 ships wav; **VoxCeleb2 ships
AAC (.m4a), which soundfile cannot read**: convert it once, keeping the tree, e.g.::

    cd voxceleb2/dev/aac && find . -name '*.m4a' | while read f; do
        mkdir -p "../wav/$(dirname "$f")"
        ffmpeg -loglevel error -i "$f" -ac 1 -ar 16000 "../wav/${f%.m4a}.wav"; done

Examples::

    python -m speaker.io.prepare_voxceleb --voxceleb2-dev /data/voxceleb2/dev/wav \\
        --voxceleb1 /data/voxceleb1/wav --trials /data/voxceleb1/veri_test2.txt \\
        --musan /data/musan --rirs /data/RIRS_NOISES --dev-speakers 200 --out data/vox
    python -m speaker.io.prepare_voxceleb ... --trials list_test_hard2.txt --pack --out data/vox-h
    python -m stage1_teacher.train --preset voxceleb --data data/vox --out exp/ecapa1024
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from speaker.io.audio import load_audio, write_pack
from speaker.io.manifest import Manifest, Trial, Utterance, read_trials
from store.atomic import atomic_dir, atomic_write_text
from store.cli import run, setup_logging
from store.errors import UserError

log = logging.getLogger("speaker.io.prepare_voxceleb")

PACK = "audio.h5"


def tree_root(path: Path) -> Path:
    """The directory holding the speaker folders: ``path`` itself or its ``wav/``."""
    if (path / "wav").is_dir() and not any(p.name.startswith("id") for p in path.iterdir()):
        return path / "wav"
    return path


def scan_tree(path: Path, option: str, sample_rate: int) -> Manifest:
    """Manifest of a VoxCeleb-style tree, with a clear word about AAC trees."""
    root = tree_root(path)
    log.info("scanning %s (every file header is read)", root)
    try:
        return Manifest.from_voxceleb(root, sample_rate=sample_rate)
    except UserError as exc:
        if next(root.rglob("*.m4a"), None) is not None:
            raise UserError(
                f"{option} {root}: holds .m4a (AAC) files, which soundfile cannot read; "
                "convert them to wav first (see --help)"
            ) from None
        raise UserError(f"{option}: {exc}") from None


def check_musan(musan: Path) -> None:
    if not any((musan / sub).is_dir() for sub in ("noise", "music", "speech")):
        raise UserError(f"--musan {musan}: expected the MUSAN layout (noise/, music/, speech/)")


def check_rirs(rirs: Path) -> None:
    root = rirs / "simulated_rirs" if (rirs / "simulated_rirs").is_dir() else rirs
    if next(root.rglob("*.wav"), None) is None:
        raise UserError(f"--rirs {rirs}: no .wav files under {root}")


def test_subset(manifest: Manifest, trials: list[Trial]) -> Manifest:
    """The utterances the trials name, in manifest order (Vox1-O names a few thousand of
    VoxCeleb1's 153,516, and evaluation embeds every utterance of the test manifest)."""
    used = {t.enroll for t in trials} | {t.test for t in trials}
    return Manifest([u for u in manifest if u.id in used], source="test manifest")


def carve_dev(train: Manifest, speakers: int, seed: int, pairs_per_speaker: int
              ) -> tuple[Manifest, Manifest, list[Trial]]:
    """Move ``speakers`` training speakers (a seeded choice) into a dev split; -> (train, dev,
    dev trials). Each dev speaker with two or more utterances gets up to ``pairs_per_speaker``
    target trials, each followed by a non-target trial with the same enrolment against
    another dev speaker's utterance (seeded), so the list is half target.

    >>> utts = [Utterance(f"s{s}/v/{u}.wav", f"s{s}", "x.wav", 16000, 16000)
    ...         for s in range(5) for u in range(3)]
    >>> train, dev, trials = carve_dev(Manifest(utts), speakers=2, seed=0, pairs_per_speaker=2)
    >>> len(train.speakers), len(dev.speakers), len(trials), sum(t.target for t in trials)
    (3, 2, 8, 4)
    """
    names = train.speakers
    if not 2 <= speakers < len(names):
        raise UserError(f"--dev-speakers {speakers}: expected 2 to {len(names) - 1} "
                        f"(the training data has {len(names)} speakers)")
    rng = np.random.default_rng([seed, 1])
    chosen = set(np.asarray(names)[np.sort(rng.permutation(len(names))[:speakers])].tolist())
    dev = Manifest([u for u in train if u.speaker in chosen], source="dev manifest")
    rest = Manifest([u for u in train if u.speaker not in chosen], source="train manifest")
    by_speaker: dict[str, list[str]] = {}
    for u in dev:
        by_speaker.setdefault(u.speaker, []).append(u.id)
    trials: list[Trial] = []
    for spk in sorted(by_speaker):
        ids = by_speaker[spk]
        others = [s for s in sorted(by_speaker) if s != spk]
        pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
        for k in rng.permutation(len(pairs))[:pairs_per_speaker]:
            enroll, test = pairs[int(k)]
            other = by_speaker[others[int(rng.integers(len(others)))]]
            trials += [Trial(True, enroll, test),
                       Trial(False, enroll, other[int(rng.integers(len(other)))])]
    return rest, dev, trials


def write_trials(path: Path, trials: list[Trial]) -> None:
    """A trial list in VoxCeleb's ``1 enroll test`` format."""
    atomic_write_text(path, "".join(f"{int(t.target)} {t.enroll} {t.test}\n" for t in trials))


def pack(manifest: Manifest, directory: Path, sample_rate: int, what: str) -> Manifest:
    """Copy ``manifest``'s audio into ``directory/audio.h5``; -> manifest pointing into it."""
    lengths: dict[str, int] = {}

    def waves() -> Iterator[tuple[str, object]]:
        for utt in tqdm(manifest, desc=f"packing {what}", unit="utt"):
            wave = load_audio(utt.path, sample_rate)
            lengths[utt.id] = len(wave)
            yield utt.id, wave

    write_pack(directory / PACK, waves(), sample_rate)
    # relative to the manifest's folder, so the prepared root can be moved
    return Manifest(
        [Utterance(u.id, u.speaker, PACK, lengths[u.id], sample_rate, key=u.id) for u in manifest],
        source=str(directory / PACK),
    )


def prepare(
    voxceleb2_dev: Path,
    voxceleb1: Path,
    trials_path: Path,
    out: Path,
    musan: Path | None = None,
    rirs: Path | None = None,
    pack_audio: bool = False,
    sample_rate: int = 16000,
    force: bool = False,
    dev_speakers: int = 0,
    dev_seed: int = 0,
    dev_pairs: int = 20,
) -> dict:
    """Build the data root ``out`` (see the module docstring); -> the counts written."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise UserError(f"{out} already exists and is not empty; remove it or pass --force")
    if musan is not None:
        check_musan(musan)
    if rirs is not None:
        check_rirs(rirs)
    train = scan_tree(voxceleb2_dev, "--voxceleb2-dev", sample_rate)
    test_all = scan_tree(voxceleb1, "--voxceleb1", sample_rate)
    try:
        trials = read_trials(trials_path, known_ids=set(test_all.ids))
    except UserError as exc:
        if "unknown utterance id" not in str(exc):
            raise
        raise UserError(
            f"{exc} (not under --voxceleb1 {tree_root(voxceleb1)}; trial ids are "
            "paths relative to the folder that holds the speaker folders, e.g. "
            "id10270/5r0dWxy17C8/00001.wav)"
        ) from None
    test = test_subset(test_all, trials)
    dev, dev_trials = None, []
    if dev_speakers:
        train, dev, dev_trials = carve_dev(train, dev_speakers, dev_seed, dev_pairs)
    shared = set(train.speakers) & set(test.speakers)
    if shared:
        log.warning("%d test speakers also occur in the training data (e.g. %s): test EERs "
                    "will be optimistic", len(shared), sorted(shared)[0])

    with atomic_dir(out) as stage:
        (stage / "train").mkdir(parents=True)
        (stage / "test").mkdir()
        if pack_audio:
            train = pack(train, stage / "train", sample_rate, "train")
            test = pack(test, stage / "test", sample_rate, "test")
        if dev is not None:
            (stage / "dev").mkdir()
            if pack_audio:
                dev = pack(dev, stage / "dev", sample_rate, "dev")
            dev.write(stage / "dev" / "manifest.jsonl")
            write_trials(stage / "dev" / "trials.txt", dev_trials)
        train.write(stage / "train" / "manifest.jsonl")
        test.write(stage / "test" / "manifest.jsonl")
        write_trials(stage / "test" / "trials.txt", trials)
        for name, source in (("musan", musan), ("rirs", rirs)):
            if source is not None:
                os.symlink(source.absolute(), stage / name, target_is_directory=True)
        summary = {
            "train": {"utterances": len(train), "speakers": len(train.speakers),
                      "hours": sum(u.num_samples for u in train) / sample_rate / 3600},
            "test": {"utterances": len(test), "speakers": len(test.speakers)},
            "trials": {"total": len(trials), "target": sum(t.target for t in trials)},
        }
        if dev is not None:
            summary["dev"] = {"utterances": len(dev), "speakers": len(dev.speakers),
                              "trials": len(dev_trials), "seed": dev_seed}
        sources = {"voxceleb2_dev": voxceleb2_dev, "voxceleb1": voxceleb1,
                   "trials": trials_path, "musan": musan, "rirs": rirs}
        atomic_write_text(stage / "prepared.json", json.dumps({
            **summary,
            "sources": {k: None if v is None else str(v.absolute()) for k, v in sources.items()},
            "pack": pack_audio,
            "sample_rate": sample_rate,
        }, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", out)
    return summary


_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Audio must be wav or flac (soundfile). VoxCeleb1 ships wav. VoxCeleb2 ships AAC (.m4a),
which soundfile cannot read: convert the tree to wav first, e.g.
  cd voxceleb2/dev/aac && find . -name '*.m4a' | while read f; do
    mkdir -p "../wav/$(dirname "$f")"
    ffmpeg -loglevel error -i "$f" -ac 1 -ar 16000 "../wav/${f%.m4a}.wav"; done
and pass --voxceleb2-dev voxceleb2/dev/wav.

\b
Examples:
  python -m speaker.io.prepare_voxceleb --voxceleb2-dev /data/voxceleb2/dev/wav \\
      --voxceleb1 /data/voxceleb1/wav --trials /data/voxceleb1/veri_test2.txt \\
      --musan /data/musan --rirs /data/RIRS_NOISES --dev-speakers 200 --out data/vox
  python -m speaker.io.prepare_voxceleb ... --trials list_test_hard2.txt --pack --out data/vox-h
  python -m stage1_teacher.train --preset voxceleb --data data/vox --out exp/ecapa1024
""")
@click.option("--voxceleb2-dev", type=_DIR, required=True,
              help="Training tree <id>/<video>/<n>.wav (VoxCeleb2 dev converted to wav; a "
                   "folder holding wav/ also works).")
@click.option("--voxceleb1", type=_DIR, required=True,
              help="VoxCeleb1 wav tree <id>/<video>/<n>.wav (or the folder holding wav/).")
@click.option("--trials", "trials_path", type=click.Path(exists=True, dir_okay=False,
                                                           path_type=Path), required=True,
              help="Trial list: veri_test2.txt (Vox1-O), list_test_all2.txt (Vox1-E) or "
                   "list_test_hard2.txt (Vox1-H).")
@click.option("--musan", type=_DIR, default=None, help="MUSAN root (noise/, music/, speech/).")
@click.option("--rirs", type=_DIR, default=None,
              help="RIRS_NOISES root (its simulated_rirs/ is used) or any RIR wav folder.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Data root to create (must not exist or be empty, unless --force).")
@click.option("--pack", "pack_audio", is_flag=True,
              help="Copy the audio into HDF5 packs (fast random crops) under ROOT.")
@click.option("--sample-rate", type=click.IntRange(min=8000), default=16000, show_default=True,
              help="Rate the audio is used at (other rates are resampled when read).")
@click.option("--dev-speakers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Carve this many training speakers into dev/ (with trials) for choosing "
                   "settings; they leave train/.")
@click.option("--dev-seed", type=int, default=0, show_default=True,
              help="Seed of the dev speakers' choice and of their trials.")
@click.option("--dev-pairs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Target trials per dev speaker (each with one non-target).")
@click.option("--force", is_flag=True, help="Replace an existing ROOT once the new one is ready.")
@click.option("-v", "--verbose", is_flag=True)
def cli(verbose: bool, **kwargs) -> None:
    """Link VoxCeleb2 dev, VoxCeleb1 test + trials, MUSAN and RIRS_NOISES into a data root
    for --data (manifests, trials.txt, musan/ and rirs/ links; optional HDF5 packs)."""
    setup_logging(verbose)
    if kwargs["musan"] is None or kwargs["rirs"] is None:
        log.warning("without --musan and --rirs the root has no augmentation data")
    summary = prepare(**kwargs)
    click.echo(
        f"train: {summary['train']['utterances']} utterances, {summary['train']['speakers']} "
        f"speakers, {summary['train']['hours']:.1f} h; test: {summary['test']['utterances']} "
        f"utterances; trials: {summary['trials']['total']} ({summary['trials']['target']} "
        "target)"
    )


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
