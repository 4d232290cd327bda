"""A pretrained teacher's classes are its own training speakers: read its label list and map
the manifest's speakers onto it.

The mapping is by speaker name. The cache's label map becomes the teacher's own
(``speakers`` in teacher class order, ``speeds`` as the teacher was trained), so teacher
class ``c`` is ``label_map.decode(c)`` and a manifest utterance of speaker ``s`` at speed
``v`` has label ``label_map.index(s, v)`` -- the same rule stage 2 and verify already use to
replay labels, with nothing else to store. Manifest speakers the teacher does not know are
refused, or with ``unknown="drop"`` their utterances are left out of the dump.

Label lists come as speechbrain's ``label_encoder.txt`` (``'id10001' => 0`` lines, then a
``================`` line and extras such as ``'starting_index' => 0``) or as a plain list,
one speaker per line in class order.

Example::

    speakers = read_label_list("spkrec-ecapa-voxceleb/label_encoder.txt")
    mapping = map_speakers({"speakers": speakers, "speeds": [1.0]}, manifest, (1.0,), "drop")
    mapping.label_map.index("id10001"), mapping.dropped_utts
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speaker.io.manifest import LabelMap, Manifest
from store.errors import UserError

SB_SEPARATOR = " => "
SB_EXTRAS = "================"
UNKNOWN_POLICIES = ("refuse", "drop")


def read_label_list(path: Path) -> list[str]:
    """Class names in class order from a speechbrain ``label_encoder.txt`` or a plain list."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read label list {path}: {exc}") from None
    speechbrain = any(line.strip() == SB_EXTRAS for line in lines)
    labels = _read_speechbrain(path, lines) if speechbrain else [
        line.strip() for line in lines if line.strip()]
    if not labels:
        raise UserError(f"label list {path} names no classes")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise UserError(f"label list {path} names class {label!r} twice")
        seen.add(label)
    return labels


def _read_speechbrain(path: Path, lines: list[str]) -> list[str]:
    """speechbrain's ``CategoricalEncoder`` file: ``repr(label) => index`` until the extras."""
    by_index: dict[int, str] = {}
    for lineno, line in enumerate(lines, 1):
        if line.strip() == SB_EXTRAS:
            break
        if not line.strip():
            continue
        literal, sep, index = line.rpartition(SB_SEPARATOR)
        try:
            if not sep:
                raise ValueError("no ' => '")
            label, cls = ast.literal_eval(literal.strip()), int(index)
        except (ValueError, SyntaxError) as exc:
            raise UserError(f"{path}:{lineno}: not a label_encoder line ({exc})") from None
        if cls in by_index:
            raise UserError(f"{path}:{lineno}: class {cls} is given twice")
        by_index[cls] = str(label)
    if sorted(by_index) != list(range(len(by_index))):
        raise UserError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


@dataclass(frozen=True)
class SpeakerMapping:
    """How a dump's rows get their labels: the label map, and which utterances take part."""

    label_map: LabelMap
    utts: np.ndarray  # int64 manifest indices of the utterances dumped, ascending
    dropped_utts: int  # utterances left out (speakers the teacher does not know)
    dropped_speakers: tuple[str, ...]

    def record(self) -> dict:
        """What the cache's ``extra["speaker_mapping"]`` says about it."""
        return {"by": "speaker name", "dropped_utterances": self.dropped_utts,
                "dropped_speakers": list(self.dropped_speakers)}


def map_speakers(teacher_label_map: dict | None, manifest: Manifest, speeds: Sequence[float],
                 unknown: str = "refuse") -> SpeakerMapping:
    """Label map and utterances of a dump of ``manifest`` by a teacher with these classes.

    ``teacher_label_map`` None (a teacher that does not name its classes): class i is the
    manifest's speaker i, as before. Otherwise the teacher's map is the cache's; its speeds
    must be the dump's, and every manifest speaker must be one of its speakers, unless
    ``unknown="drop"``, which leaves those speakers' utterances out.
    """
    if unknown not in UNKNOWN_POLICIES:
        raise UserError(f"unknown-speakers policy {unknown!r}: choose refuse or drop")
    every = np.arange(len(manifest), dtype=np.int64)
    if teacher_label_map is None:
        return SpeakerMapping(LabelMap.from_manifest(manifest, speeds), every, 0, ())
    label_map = LabelMap.from_dict(teacher_label_map)
    if label_map.speeds != tuple(float(s) for s in speeds):
        raise UserError(
            f"the teacher's label map has its speakers at speeds {label_map.speeds}, but this dump "
            f"uses --speeds {','.join(f'{s:g}' for s in speeds)}; dump with --speeds "
            f"{','.join(f'{s:g}' for s in label_map.speeds)}")
    known = set(label_map.speakers)
    missing = sorted({u.speaker for u in manifest} - known)
    if missing and unknown == "refuse":
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise UserError(
            f"{len(missing)} manifest speaker(s) are not among the teacher's "
            f"{len(label_map.speakers)} classes: {shown}; pass --unknown-speakers drop to leave "
            "their utterances out")
    keep = np.array([u.speaker in known for u in manifest], dtype=bool)
    if not keep.any():
        raise UserError("no manifest speaker is among the teacher's classes; nothing to dump "
                        "(is this the teacher's label list?)")
    return SpeakerMapping(label_map, every[keep], int((~keep).sum()), tuple(missing))


def label_map_for(speakers: Sequence[str], speeds: Sequence[float]) -> dict:
    """A teacher label map (``LabelMap.to_dict``) naming ``speakers`` at ``speeds``; classes in
    wespeaker's (and entkd's) order ``speed_index * len(speakers) + speaker_index``."""
    return LabelMap(tuple(speakers), tuple(speeds)).to_dict()
