"""Checkpoint round trip, hashing, atomic writes and one-line errors on bad files."""

from __future__ import annotations

import hashlib

import pytest
import torch

from speaker.models import build
from speaker.models.checkpoint import load_checkpoint, save_checkpoint
from speaker.models.heads import AAMSoftmax
from store.errors import UserError

ARCH_KWARGS = {"channels": 32, "embed_dim": 16}
LABEL_MAP = {"speakers": ["s0", "s1", "s2", "s3"], "speeds": [1.0]}


def _trained_pair():
    torch.manual_seed(0)
    model = build("xvector", **ARCH_KWARGS)
    head = AAMSoftmax(16, 4, margin=0.15)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    feats, labels = torch.randn(4, 60, 80), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(head(model(feats), labels), labels).backward()
    opt.step()  # moves weights and BN statistics away from their initial values
    return model, head, opt


def _save(path, model, head, **overrides):
    kwargs = dict(
        arch="xvector",
        arch_kwargs=ARCH_KWARGS,
        model=model,
        head=head,
        label_map=LABEL_MAP,
        config={"lr": 0.1, "crop": [200, 200]},
    )
    kwargs.update(overrides)
    return save_checkpoint(path, **kwargs)


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path):
    model, head, opt = _trained_pair()
    path = tmp_path / "ckpt" / "teacher.pt"
    state = {"epoch": 3, "optimizer": opt.state_dict(), "rng": torch.get_rng_state()}
    sha = _save(path, model, head, state=state)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["teacher.pt"]  # no temp file left

    loaded = load_checkpoint(path)
    assert loaded.sha256 == sha
    assert (loaded.arch, loaded.arch_kwargs) == ("xvector", ARCH_KWARGS)
    assert loaded.label_map == LABEL_MAP and loaded.config == {"lr": 0.1, "crop": [200, 200]}
    assert loaded.state["epoch"] == 3
    torch.testing.assert_close(loaded.state["rng"], state["rng"])
    assert loaded.model.input_kind == "fbank" and not loaded.model.training

    model.eval()
    feats = torch.randn(3, 120, 80)
    with torch.no_grad():
        emb = model(feats)
        assert torch.equal(loaded.model(feats), emb)
        assert torch.equal(loaded.head.cosine_logits(emb), head.cosine_logits(emb))
    assert loaded.head.margin == 0.15 and loaded.head.scale == head.scale


def test_saving_again_replaces_atomically_and_changes_the_hash(tmp_path):
    model, head, _ = _trained_pair()
    path = tmp_path / "teacher.pt"
    first = _save(path, model, head)
    assert _save(path, model, head) == first  # same content, same bytes
    second = _save(path, model, head, config={"lr": 0.2})
    assert second != first and load_checkpoint(path).sha256 == second


def test_head_is_optional(tmp_path):
    model, _, _ = _trained_pair()
    _save(tmp_path / "m.pt", model, None)
    assert load_checkpoint(tmp_path / "m.pt").head is None


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    model, head, _ = _trained_pair()
    path = tmp_path / "teacher.pt"
    sha = _save(path, model, head)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match=r"cannot write .*teacher\.pt: disk full"):
        _save(path, model, head)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.pt"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_non_plain_content_is_refused_at_save_time(tmp_path):
    model, head, _ = _trained_pair()
    with pytest.raises(TypeError, match="config"):
        _save(tmp_path / "t.pt", model, head, config={"path": tmp_path})
    assert not (tmp_path / "t.pt").exists()


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_or_foreign_file_is_a_user_error(tmp_path, damage):
    model, head, _ = _trained_pair()
    path = tmp_path / "teacher.pt"
    _save(path, model, head)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"state_dict": model.state_dict()}, path)
    with pytest.raises(UserError, match=str(path)):
        load_checkpoint(path)


def test_unknown_architecture_is_a_user_error_naming_path_and_choices(tmp_path):
    model, head, _ = _trained_pair()
    path = tmp_path / "teacher.pt"
    _save(path, model, head)
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "transformer9000"
    torch.save(payload, path)
    with pytest.raises(UserError, match=rf"{path}.*transformer9000.*xvector"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_arch_are_a_user_error(tmp_path):
    model, head, _ = _trained_pair()
    path = tmp_path / "teacher.pt"
    _save(path, model, head, arch_kwargs={"channels": 64, "embed_dim": 16})
    with pytest.raises(UserError, match="do not fit"):
        load_checkpoint(path)
