"""Any model spec -> an embedding module: what ``stage2_student.evaluate`` and
``stage2_student.embed`` feed audio to.

Accepted specs (one resolution order for every command):

- ``speechbrain:DIR`` / ``wespeaker:DIR``: a pretrained model in its own layout
  (:func:`speaker.teachers.load.load_teacher`); its embedding network;
- a run folder holding ``model.pt``, or an entkd checkpoint (``model.pt``): its model;
- an exported ``.onnx`` file (run by ONNX Runtime) or TorchScript file
  (:mod:`speaker.models.export`); a TorchScript file that is not an entkd export maps
  ``[B, ...]`` to embeddings ``[B, D]`` or, as a teacher, to ``(logits, embeddings)``;
- ``package.module:factory`` (and a TorchScript teacher declaring its head): through
  :func:`~speaker.teachers.load.load_teacher`, whose module returns
  ``(logits, embeddings)``; a teacher that gives logits only is refused.

Every module returned has ``input_kind`` (``"fbank"`` or ``"wave"``) and ``sample_rate``
(``None`` when the source does not say) and has passed a probe: one second of input must
give a finite ``[1, D]`` embedding, else it is refused as "not a speaker embedding model".

Example::

    model = load_embedder("speechbrain:pretrained/spkrec-ecapa-voxceleb")
    model.input_kind, model.sample_rate   # ('wave', 16000)
    emb = model(torch.randn(2, 16000))    # [2, 192]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from speaker.models.checkpoint import load_checkpoint
from speaker.models.export import example_input, is_onnx, load_exported
from speaker.teachers.base import CheckpointTeacher, Teacher
from speaker.teachers.frontend import check_frontend
from speaker.teachers.load import is_pretrained_spec, load_teacher
from store.errors import UserError, first_line


class TeacherEmbeddings(nn.Module):
    """A teacher module returning ``(logits, embeddings)`` -> its embeddings."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise UserError("the teacher returns logits only, no embeddings: not a speaker "
                            "embedding model (return (logits, embeddings) from forward)")
        return out[1]


def _from_teacher(teacher: Teacher) -> nn.Module:
    module = teacher.module
    # entkd checkpoints, speechbrain and wespeaker: the embedding network itself
    model = module.model if isinstance(module, CheckpointTeacher) else TeacherEmbeddings(module)
    model.input_kind = teacher.input_kind
    model.sample_rate = None if teacher.frontend is None else teacher.frontend.sample_rate
    return model


def _from_file(path: Path) -> nn.Module:
    if is_onnx(path) or path.suffix.lower() in (".ts", ".jit"):
        model = load_exported(path)
    else:
        try:
            return load_checkpoint(path).model  # records no sample rate (WavLM's class does)
        except UserError as checkpoint_error:
            try:
                model = load_exported(path)
            except UserError as exc:
                raise UserError(f"model {path}: neither an entkd checkpoint "
                                f"({checkpoint_error}) nor TorchScript ({exc})") from None
    settings = model.export_settings
    if settings is None:  # a TorchScript file from elsewhere: embeddings or a teacher's pair
        model = TeacherEmbeddings(model) if _returns_pair(model) else model
    model.input_kind = settings["input_kind"] if settings else "fbank"
    model.sample_rate = settings["sample_rate"] if settings else None
    return model


def _returns_pair(module: nn.Module) -> bool:
    try:
        with torch.no_grad():
            return isinstance(module(example_input("fbank", 1.0)), tuple | list)
    except Exception:  # noqa: BLE001 - the probe in load_embedder names the failure
        return False


def load_embedder(spec: str) -> nn.Module:
    """Resolve ``spec`` (see the module doc) to a CPU embedding module in eval mode."""
    path = Path(spec)
    if is_pretrained_spec(spec):
        model = _from_teacher(load_teacher(spec))
    elif path.is_dir() and (path / "model.pt").is_file():
        model = _from_file(path / "model.pt")
    elif path.is_file():
        model = _from_file(path)
    elif ":" in spec and not path.exists():
        model = _from_teacher(load_teacher(spec))
    else:
        raise UserError(f"model {spec!r}: no such file or run folder (with model.pt), and not "
                        "speechbrain:DIR, wespeaker:DIR or module:factory")
    model.eval()
    _probe(model, spec)
    return model


def _probe(model: nn.Module, spec: str) -> None:
    x = example_input(model.input_kind, 1.0, getattr(model, "sample_rate", None) or 16000)
    try:
        with torch.no_grad():
            out = model(x)
    except UserError:
        raise
    except Exception as exc:  # any failure of a foreign model on a plain input
        first = first_line(exc)
        raise UserError(f"model {spec!r}: not a speaker embedding model (on {model.input_kind} "
                        f"input {tuple(x.shape)} it fails: {first})") from None
    if not (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == 1
            and out.is_floating_point() and bool(torch.isfinite(out).all())):
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model {spec!r}: not a speaker embedding model (on {model.input_kind} "
                        f"input {tuple(x.shape)} it gives {what}, not a finite [1, D] "
                        "embedding)")


def check_rate(model: nn.Module, sample_rate: int, spec: str) -> None:
    """Refuse audio at another rate than the one the model declares (pretrained teachers
    and exported files declare theirs)."""
    from speaker.teachers.frontend import Frontend

    rate = getattr(model, "sample_rate", None)
    if rate is not None:
        check_frontend(Frontend("declared", int(rate), ""), sample_rate, spec)
