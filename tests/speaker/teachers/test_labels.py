"""Teacher label lists (speechbrain's label_encoder.txt, plain lists) and the mapping of
manifest speakers onto a teacher's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speaker.io.manifest import Manifest, Utterance
from speaker.teachers.labels import map_speakers, read_label_list
from store.errors import UserError

# As speechbrain's CategoricalEncoder.save writes it (repr(label) => index, then extras).
LABEL_ENCODER = """'id10003' => 0
'id10001' => 2
'id10002' => 1
================
'starting_index' => 0
"""


def manifest(*speakers: str) -> Manifest:
    return Manifest(Utterance(f"u{i}", s, f"u{i}.wav", 16000, 16000)
                    for i, s in enumerate(speakers))


def test_speechbrain_label_encoder(tmp_path: Path) -> None:
    path = tmp_path / "label_encoder.txt"
    path.write_text(LABEL_ENCODER)
    assert read_label_list(path) == ["id10003", "id10002", "id10001"]


def test_plain_list(tmp_path: Path) -> None:
    path = tmp_path / "speakers.txt"
    path.write_text("b\n\na\n")
    assert read_label_list(path) == ["b", "a"]


@pytest.mark.parametrize("text, message", [
    ("'a' => 0\n'b' => 0\n================\n", "class 0 is given twice"),
    ("'a' => 0\n'b' => 2\n================\n", "not 0..1"),
    ("a => 0\n================\n", "not a label_encoder line"),
    ("a\nb\na\n", "names class 'a' twice"),
    ("\n\n", "names no classes"),
])
def test_malformed_lists(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_label_list(path)


def test_mapping_by_name() -> None:
    teacher = {"speakers": ["x", "b", "a"], "speeds": [1.0]}
    mapping = map_speakers(teacher, manifest("a", "b", "a"), (1.0,))
    assert mapping.label_map.index("a") == 2 and mapping.dropped_utts == 0
    np.testing.assert_array_equal(mapping.utts, [0, 1, 2])


def test_unknown_speakers() -> None:
    teacher = {"speakers": ["b"], "speeds": [1.0]}
    with pytest.raises(UserError, match="1 manifest speaker.*: a; pass --unknown-speakers drop"):
        map_speakers(teacher, manifest("a", "b", "a"), (1.0,))
    mapping = map_speakers(teacher, manifest("a", "b", "a"), (1.0,), "drop")
    np.testing.assert_array_equal(mapping.utts, [1])
    assert mapping.dropped_utts == 2 and mapping.dropped_speakers == ("a",)
    with pytest.raises(UserError, match="no manifest speaker"):
        map_speakers(teacher, manifest("a"), (1.0,), "drop")


def test_teacher_without_names_keeps_the_manifests_classes() -> None:
    mapping = map_speakers(None, manifest("b", "a"), (1.0, 0.9))
    assert mapping.label_map.speakers == ("a", "b") and mapping.label_map.speeds == (1.0, 0.9)


def test_speeds_must_be_the_teachers() -> None:
    with pytest.raises(UserError, match="dump with --speeds 1,0.9,1.1"):
        map_speakers({"speakers": ["a"], "speeds": [1.0, 0.9, 1.1]}, manifest("a"), (1.0,))
