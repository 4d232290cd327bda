"""load_teacher: checkpoints, TorchScript files and module:factory specs behind one interface
(logits without margin, optional embeddings, identity hash, input kind), and its errors."""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from speaker.models import build
from speaker.models.checkpoint import save_checkpoint
from speaker.models.heads import AAMSoftmax
from speaker.teachers.load import load_teacher
from store.errors import UserError

LABEL_MAP = {"speakers": ["a", "b", "c", "d", "e"], "speeds": [1.0]}


def checkpoint(path: Path, seed: int = 0, head: bool = True, margin: float = 0.2) -> Path:
    torch.manual_seed(seed)
    kwargs = {"channels": 32, "embed_dim": 16}
    save_checkpoint(path, arch="xvector", arch_kwargs=kwargs, model=build("xvector", **kwargs),
                    head=AAMSoftmax(16, 5, scale=30.0, margin=0.1) if head else None,
                    label_map=LABEL_MAP, config={"schedule": {"margin": margin}})
    return path


class Scriptable(nn.Module):
    """fbank -> (logits, embedding); declares its head (set in __init__: TorchScript infers
    the attributes' types there)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(80, 5)
        self.input_kind = "fbank"
        self.scale = 16.0
        self.margin_kind = "am"
        self.margin = 0.2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = x.mean(dim=1)
        return self.proj(emb), emb


class LogitsOnly(nn.Module):
    input_kind = "wave"
    scale = 32.0
    margin_kind = "none"

    def __init__(self, dtype: torch.dtype = torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 3).to(dtype)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(x[:, :4].to(self.proj.weight.dtype)))


def logits_only() -> nn.Module:
    return LogitsOnly()


def logits_only_bf16() -> nn.Module:
    return LogitsOnly(torch.bfloat16)


def not_a_module():
    return "nope"


class Undeclared(nn.Module):
    """Logits with no declared scale or margin."""

    def __init__(self, **attributes):
        super().__init__()
        self.proj = nn.Linear(4, 3)
        for name, value in attributes.items():
            setattr(self, name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x[:, :4])


def undeclared() -> nn.Module:
    return Undeclared()


def no_scale() -> nn.Module:
    return Undeclared(margin_kind="aam", margin=0.2)


def bad_kind() -> nn.Module:
    return Undeclared(scale=32.0, margin_kind="arc", margin=0.2)


def negative_margin() -> nn.Module:
    return Undeclared(scale=32.0, margin_kind="aam", margin=-0.1)


def test_checkpoint_teacher(tmp_path: Path):
    path = checkpoint(tmp_path / "model.pt", margin=0.25)
    teacher = load_teacher(str(path))
    assert teacher.arch == "xvector"
    assert teacher.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert teacher.label_map == LABEL_MAP
    assert teacher.input_kind == "fbank"
    assert teacher.scale == 30.0
    assert teacher.margin == 0.25  # the training schedule's final margin, not the head's
    assert not teacher.module.training

    x = torch.randn(3, 50, 80)
    logits, emb = teacher(x)
    assert logits.dtype == torch.float32 and logits.shape == (3, 5)
    assert emb is not None and emb.shape == (3, 16)
    assert not logits.requires_grad
    # logits are s * cos(emb, class centre): no margin, bounded by the scale
    head = teacher.module.head
    cos = nn.functional.normalize(emb) @ nn.functional.normalize(head.weight).T
    torch.testing.assert_close(logits, 30.0 * cos, rtol=1e-5, atol=1e-5)
    assert logits.abs().max() <= 30.0 + 1e-4


def test_checkpoint_identity_follows_the_file(tmp_path: Path):
    a = load_teacher(str(checkpoint(tmp_path / "a.pt", seed=0)))
    b = load_teacher(str(checkpoint(tmp_path / "b.pt", seed=1)))
    assert a.sha256 != b.sha256
    x = torch.randn(2, 40, 80)
    assert not torch.equal(a(x)[0], b(x)[0])


def test_checkpoint_without_head(tmp_path: Path):
    path = checkpoint(tmp_path / "emb.pt", head=False)
    with pytest.raises(UserError, match="no classification head"):
        load_teacher(str(path))


def test_torchscript_teacher(tmp_path: Path):
    path = tmp_path / "teacher.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in favour of export
        torch.jit.script(Scriptable()).save(str(path))
    teacher = load_teacher(str(path))
    assert teacher.arch == "torchscript:teacher.ts"
    assert teacher.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert teacher.input_kind == "fbank" and teacher.scale == 16.0 and teacher.margin == 0.2
    assert teacher.margin_kind == "am"
    assert teacher.label_map is None
    logits, emb = teacher(torch.randn(2, 30, 80))
    assert logits.shape == (2, 5) and emb is not None and emb.shape == (2, 80)


def test_factory_teacher(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "teacher_factories", sys.modules[__name__])
    teacher = load_teacher("teacher_factories:logits_only")
    assert teacher.arch == "teacher_factories:logits_only"
    assert teacher.input_kind == "wave" and teacher.scale == 32.0
    assert (teacher.margin_kind, teacher.margin) == ("none", 0.0)
    assert not teacher.module.training  # eval mode: dropout off, so outputs are repeatable
    x = torch.randn(4, 16000)
    logits, emb = teacher(x)
    assert emb is None and logits.shape == (4, 3)
    assert torch.equal(logits, teacher(x)[0])
    # identity: a hash of the weights, the same for the same weights and different otherwise
    assert len(teacher.sha256) == 64
    assert load_teacher("teacher_factories:logits_only").sha256 == teacher.sha256
    with torch.no_grad():
        teacher.module.proj.bias.add_(1.0)
    from speaker.teachers.base import state_sha256

    assert state_sha256(teacher.module) != teacher.sha256


def test_factory_teacher_in_bfloat16(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "teacher_factories", sys.modules[__name__])
    teacher = load_teacher("teacher_factories:logits_only_bf16")
    assert len(teacher.sha256) == 64
    logits, _ = teacher(torch.randn(2, 100))
    assert logits.dtype == torch.float32  # always handed out as float32


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("no/such/model.pt", "no such file"),
        ("no_such_module_xyz:factory", "cannot import factory"),
        ("teacher_factories:missing", "cannot import factory"),
        ("teacher_factories:not_a_module", "not a torch.nn.Module"),
    ],
)
def test_bad_specs(spec: str, needle: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "teacher_factories", sys.modules[__name__])
    with pytest.raises(UserError, match=needle):
        load_teacher(spec)


def test_file_that_is_neither_checkpoint_nor_torchscript(tmp_path: Path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(UserError, match="neither an entkd checkpoint") as info:
        load_teacher(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("factory", ["undeclared", "no_scale", "bad_kind", "negative_margin"])
def test_teacher_without_a_declared_head_is_refused(factory: str,
                                                    monkeypatch: pytest.MonkeyPatch):
    """No silent scale 32: KD at another scale is KD at another temperature."""
    monkeypatch.setitem(sys.modules, "teacher_factories", sys.modules[__name__])
    with pytest.raises(UserError) as caught:
        load_teacher(f"teacher_factories:{factory}")
    message = str(caught.value)
    assert "\n" not in message and f"teacher_factories:{factory}" in message
    assert "give the module attributes scale" in message and "margin_kind" in message
