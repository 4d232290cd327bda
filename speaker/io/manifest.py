"""Manifests (which utterances exist, whose they are, how long), label maps and trial lists.

A :class:`Manifest` is an immutable, ordered list of :class:`Utterance` with unique ids.
It is built from a VoxCeleb tree (:meth:`Manifest.from_voxceleb`), a Kaldi data directory
(:meth:`Manifest.from_kaldi`) or read from its own JSON-lines file (:meth:`Manifest.read`).
Its :meth:`Manifest.content_hash` identifies it inside a logit cache, so row ``utt`` indices
stay meaningful.

Example::

    m = Manifest.from_voxceleb("/data/voxceleb1/wav")
    m.write("train.jsonl")
    assert Manifest.read("train.jsonl").content_hash() == m.content_hash()
    labels = LabelMap.from_manifest(m, speeds=(1.0, 0.9, 1.1))
    trials = read_trials("veri_test2.txt", known_ids=m.ids)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

import soundfile

from store.atomic import atomic_write_text
from store.errors import UserError

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Utterance:
    """One utterance; ``num_samples`` counts samples at ``sample_rate`` (the rate it is used at).

    ``path`` is an audio file, or an HDF5 pack (see :func:`speaker.io.audio.write_pack`) when
    ``key`` names the dataset inside it.

    Example::

        Utterance("id10270/5r0dWxy17C8/00001.wav", "id10270", "/vox/id10270/5r0dWxy17C8/00001.wav",
                  130000, 16000)
    """

    id: str
    speaker: str
    path: str
    num_samples: int
    sample_rate: int
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["key"] is None:
            del d["key"]
        return d


_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "speaker": (str,),
    "path": (str,),
    "num_samples": (int,),
    "sample_rate": (int,),
}


def _utterance_from_dict(d: Any, where: str, base: Path | None) -> Utterance:
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = set(d) - set(_FIELDS) - {"key"}
    if unknown:
        raise UserError(f"{where}: unknown field(s) {sorted(unknown)}")
    for name, types in _FIELDS.items():
        if name not in d:
            raise UserError(f"{where}: missing field {name!r}")
        if not isinstance(d[name], types) or isinstance(d[name], bool):
            raise UserError(f"{where}: field {name!r} has the wrong type ({d[name]!r})")
    key = d.get("key")
    if key is not None and not isinstance(key, str):
        raise UserError(f"{where}: field 'key' must be a string or absent")
    if d["num_samples"] < 0 or d["sample_rate"] <= 0:
        raise UserError(f"{where}: num_samples must be >= 0 and sample_rate > 0")
    path = d["path"]
    if base is not None and not os.path.isabs(path):
        path = str(base / path)
    return Utterance(d["id"], d["speaker"], path, d["num_samples"], d["sample_rate"], key)


class Manifest(Sequence[Utterance]):
    """Immutable ordered utterances with unique ids.

    Example::

        >>> m = Manifest([Utterance("a", "spk1", "a.wav", 16000, 16000)])
        >>> m.index_of("a"), m.speakers, len(m)
        (0, ['spk1'], 1)
    """

    def __init__(self, utterances: Iterable[Utterance], source: str = "manifest") -> None:
        self.utterances: tuple[Utterance, ...] = tuple(utterances)
        self._index: dict[str, int] = {}
        for i, utt in enumerate(self.utterances):
            first = self._index.setdefault(utt.id, i)
            if first != i:
                raise UserError(
                    f"{source}: duplicate utterance id {utt.id!r} (entries {first} and {i})"
                )

    def __len__(self) -> int:
        return len(self.utterances)

    @overload
    def __getitem__(self, i: int) -> Utterance: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Utterance]: ...
    def __getitem__(self, i: int | slice) -> Utterance | Sequence[Utterance]:
        return self.utterances[i]

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} utterances, {len(self.speakers)} speakers)"

    def index_of(self, utt_id: str) -> int:
        """Position of ``utt_id``; an unknown id is a :class:`UserError`."""
        try:
            return self._index[utt_id]
        except KeyError:
            raise UserError(f"unknown utterance id {utt_id!r}") from None

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.utterances]

    @property
    def speakers(self) -> list[str]:
        """Sorted unique speaker names."""
        return sorted({u.speaker for u in self.utterances})

    def content_hash(self) -> str:
        """sha256 hex of the canonical JSON of ``[id, speaker, num_samples]`` per utterance.

        Order-sensitive (row ``utt`` indices in a cache point into this order); paths are
        left out so a corpus can move without invalidating caches built on it.
        """
        canon = [[u.id, u.speaker, u.num_samples] for u in self.utterances]
        blob = json.dumps(canon, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    # ---- JSON lines ------------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a JSON-lines manifest; relative ``path`` fields resolve against its directory.

        Example::

            manifest = Manifest.read("demo_out/corpus/train.jsonl")
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read manifest {path}: {exc}") from None
        base = path.resolve().parent
        utts: list[Utterance] = []
        seen: dict[str, int] = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
            utt = _utterance_from_dict(d, where, base)
            if utt.id in seen:
                raise UserError(
                    f"{where}: duplicate utterance id {utt.id!r} (first at line {seen[utt.id]})"
                )
            seen[utt.id] = lineno
            utts.append(utt)
        if not utts:
            raise UserError(f"{path}: manifest is empty")
        return cls(utts, source=str(path))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write one JSON object per line, atomically (paths are stored as they are)."""
        text = "".join(
            json.dumps(u.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
            for u in self.utterances
        )
        atomic_write_text(path, text)

    # ---- corpus layouts --------------------------------------------------------------------

    @classmethod
    def from_voxceleb(cls, root: str | os.PathLike[str], sample_rate: int = 16000) -> Manifest:
        """Scan ``root/<speaker>/<video>/<n>.wav`` (also ``.flac``), sorted by id.

        Ids are paths relative to ``root`` exactly as VoxCeleb trial lists write them
        (``id10270/5r0dWxy17C8/00001.wav``); the speaker is the first path component.
        Paths are stored absolute. Lengths come from the file headers; files at another rate
        are counted at ``sample_rate`` (they are resampled when read, see :mod:`speaker.io.audio`).

        Example::

            manifest = Manifest.from_voxceleb("/data/voxceleb1/wav")
        """
        root = Path(root).absolute()
        if not root.is_dir():
            raise UserError(f"VoxCeleb root {root} is not a directory")
        files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
        )
        if not files:
            raise UserError(f"no .wav/.flac files under {root}")
        utts = []
        for p in files:
            rel = p.relative_to(root).as_posix()
            parts = rel.split("/")
            if len(parts) < 2:
                raise UserError(
                    f"{p}: expected {root}/<speaker>/<video>/<n>.wav, found a file directly "
                    "under the root"
                )
            n = audio_num_samples(p, sample_rate)
            utts.append(Utterance(rel, parts[0], str(p), n, sample_rate))
        return cls(utts, source=str(root))

    @classmethod
    def from_kaldi(cls, data_dir: str | os.PathLike[str], sample_rate: int = 16000) -> Manifest:
        """Read a Kaldi data directory: ``wav.scp`` + ``utt2spk`` (+ optional ``utt2num_samples``).

        ``wav.scp`` lines are ``<utt> <path>``; relative paths resolve against the current
        directory (the Kaldi convention) and are stored absolute. Piped commands (``... |``) and ``segments`` files
        are not supported: extract the audio to files first. ``utt2num_samples`` is trusted
        to count samples at ``sample_rate``; without it lengths come from the file headers.
        Order follows ``wav.scp``.

        Example::

            manifest = Manifest.from_kaldi("data/train")
        """
        data_dir = Path(data_dir)
        scp = data_dir / "wav.scp"
        u2s = data_dir / "utt2spk"
        if (data_dir / "segments").exists():
            raise UserError(
                f"{data_dir / 'segments'}: Kaldi segments are not supported; "
                "extract each segment to its own audio file"
            )
        wavs = _read_kaldi_table(scp)
        for utt, (value, lineno) in wavs.items():
            if value.endswith("|") or value.startswith("|"):
                raise UserError(
                    f"{scp}:{lineno}: piped command for {utt!r} is not supported; "
                    "write the audio to a file and list its path"
                )
        speakers = _read_kaldi_table(u2s)
        extra = set(speakers) - set(wavs)
        if extra:
            logger.warning("%s: %d utterances not in wav.scp are ignored", u2s, len(extra))
        lengths: dict[str, tuple[str, int]] = {}
        n2s = data_dir / "utt2num_samples"
        if n2s.exists():
            lengths = _read_kaldi_table(n2s)
        utts = []
        for utt, (path, lineno) in wavs.items():
            if utt not in speakers:
                raise UserError(f"{scp}:{lineno}: utterance {utt!r} has no speaker in {u2s}")
            if not os.path.isfile(path):  # one stat, also when utt2num_samples spares the header
                raise UserError(f"{scp}:{lineno}: audio {path} of utterance {utt!r} does not exist")
            spk = speakers[utt][0]
            if " " in spk:
                raise UserError(f"{u2s}:{speakers[utt][1]}: expected '<utt> <speaker>'")
            if utt in lengths:
                text, ln = lengths[utt]
                try:
                    n = int(text)
                except ValueError:
                    raise UserError(f"{n2s}:{ln}: {text!r} is not a sample count") from None
            else:
                try:
                    n = audio_num_samples(path, sample_rate)
                except UserError as exc:
                    raise UserError(f"{scp}:{lineno}: {exc}") from None
            # absolute, so a manifest written elsewhere still finds the file
            utts.append(Utterance(utt, spk, os.path.abspath(path), n, sample_rate))
        if not utts:
            raise UserError(f"{scp}: no utterances")
        return cls(utts, source=str(scp))


def _read_kaldi_table(path: Path) -> dict[str, tuple[str, int]]:
    """``<key> <value...>`` lines -> {key: (value, line number)}; duplicate keys are errors."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    table: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2:
            raise UserError(f"{path}:{lineno}: expected '<key> <value>'")
        key, value = parts
        if key in table:
            raise UserError(
                f"{path}:{lineno}: duplicate utterance id {key!r} (first at line {table[key][1]})"
            )
        table[key] = (value.strip(), lineno)
    return table


_resampled_warned = False


def audio_num_samples(path: str | os.PathLike[str], sample_rate: int) -> int:
    """Length of an audio file in samples at ``sample_rate`` (header only, no decoding).

    At another native rate this is the length :func:`speaker.io.audio.load_audio` returns
    after resampling.

    Example::

        audio_num_samples("a_8khz.wav", 16000)  # 24000 samples at 8 kHz -> 48000
    """
    global _resampled_warned
    try:
        info = soundfile.info(str(path))
    except (soundfile.SoundFileError, OSError) as exc:
        reason = "no such file" if not os.path.exists(path) else str(exc)
        raise UserError(f"cannot read audio {path}: {reason}") from None
    if info.samplerate == sample_rate:
        return int(info.frames)
    if not _resampled_warned:
        logger.info(
            "%s is at %d Hz; such files are resampled to %d Hz when read",
            path,
            info.samplerate,
            sample_rate,
        )
        _resampled_warned = True
    # torchaudio.functional.resample yields ceil(n * new / orig) samples
    return -(-int(info.frames) * sample_rate // int(info.samplerate))


# ---- label map ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelMap:
    """Training classes = (speaker, speed) pairs; ``class = speed_idx * n_speakers + spk_idx``.

    With speed perturbation (wespeaker) a sped-up speaker is a new class.

    Example::

        >>> lm = LabelMap(("a", "b"), (1.0, 0.9))
        >>> lm.num_classes, lm.index("b", 0.9), lm.decode(3)
        (4, 3, ('b', 0.9))
    """

    speakers: tuple[str, ...]
    speeds: tuple[float, ...] = (1.0,)
    _spk_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "speakers", tuple(self.speakers))
        object.__setattr__(self, "speeds", tuple(float(s) for s in self.speeds))
        if not self.speakers:
            raise UserError("label map has no speakers")
        if len(set(self.speakers)) != len(self.speakers):
            raise UserError("label map lists a speaker twice")
        if not self.speeds or any(not s > 0 for s in self.speeds):
            raise UserError(f"speeds must be positive, got {self.speeds}")
        if len(set(self.speeds)) != len(self.speeds):
            raise UserError(f"speeds must be unique, got {self.speeds}")
        object.__setattr__(self, "_spk_index", {s: i for i, s in enumerate(self.speakers)})

    @classmethod
    def from_manifest(cls, manifest: Manifest, speeds: Sequence[float] = (1.0,)) -> LabelMap:
        return cls(tuple(manifest.speakers), tuple(speeds))

    @property
    def num_classes(self) -> int:
        return len(self.speakers) * len(self.speeds)

    def speed_index(self, speed: float) -> int:
        for i, s in enumerate(self.speeds):
            if math.isclose(s, speed, rel_tol=1e-9):
                return i
        raise UserError(f"speed {speed} is not in the label map's speeds {self.speeds}")

    def index(self, speaker: str, speed: float = 1.0) -> int:
        """Class index of ``speaker`` at ``speed``; unknown speaker/speed -> :class:`UserError`."""
        try:
            spk = self._spk_index[speaker]
        except KeyError:
            raise UserError(f"speaker {speaker!r} is not in the label map") from None
        return self.speed_index(speed) * len(self.speakers) + spk

    def decode(self, index: int) -> tuple[str, float]:
        """Inverse of :meth:`index`: class -> (speaker, speed)."""
        if not 0 <= index < self.num_classes:
            raise UserError(f"class {index} outside [0, {self.num_classes})")
        speed_idx, spk = divmod(index, len(self.speakers))
        return self.speakers[spk], self.speeds[speed_idx]

    def to_dict(self) -> dict[str, Any]:
        return {"speakers": list(self.speakers), "speeds": list(self.speeds)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelMap:
        try:
            return cls(tuple(d["speakers"]), tuple(d.get("speeds", (1.0,))))
        except (KeyError, TypeError) as exc:
            raise UserError(f"malformed label map: {exc}") from None


# ---- trials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One verification trial: is ``test`` spoken by the speaker of ``enroll``?"""

    target: bool
    enroll: str
    test: str


_KALDI_LABELS = {"target": True, "nontarget": False}
_VOX_LABELS = {"1": True, "0": False}


def read_trials(
    path: str | os.PathLike[str], known_ids: Collection[str] | None = None
) -> list[Trial]:
    """Read a trial list: VoxCeleb ``1 a.wav b.wav`` or Kaldi ``a b target|nontarget`` lines.

    With ``known_ids`` every id must be known; the first unknown one is a
    :class:`UserError` naming ``file:line``. A list without target trials, or without
    non-target trials, is a :class:`UserError` too (nothing could be scored).

    Example::

        trials = read_trials("veri_test2.txt", known_ids=manifest.ids)
        trials[0]  # Trial(target=True, enroll='id10270/x6uYqmx31kE/00001.wav', test=...)
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read trial list {path}: {exc}") from None
    known = None
    if known_ids is not None:
        known = known_ids if isinstance(known_ids, set | frozenset | dict) else set(known_ids)
    trials = []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) == 3 and parts[2] in _KALDI_LABELS:
            trial = Trial(_KALDI_LABELS[parts[2]], parts[0], parts[1])
        elif len(parts) == 3 and parts[0] in _VOX_LABELS:
            trial = Trial(_VOX_LABELS[parts[0]], parts[1], parts[2])
        else:
            raise UserError(
                f"{where}: expected '1|0 <enroll> <test>' or '<enroll> <test> target|nontarget'"
            )
        if known is not None:
            for utt in (trial.enroll, trial.test):
                if utt not in known:
                    raise UserError(f"{where}: unknown utterance id {utt!r}")
        trials.append(trial)
    if not trials:
        raise UserError(f"{path}: no trials")
    kinds = {t.target for t in trials}
    if len(kinds) == 1:
        # Checked here, when a run starts, not when its last epoch is scored.
        missing = "non-target" if True in kinds else "target"
        raise UserError(f"{path}: no {missing} trials; EER and minDCF need target and "
                        "non-target trials")
    return trials
