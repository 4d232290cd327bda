"""``wespeaker:DIR`` teachers: a checkpoint saved in wespeaker's layout (its key names, its
``config.yaml``) from an entkd model loads back into a teacher whose logits are that model's
own ``scale * cos``; what does not map onto entkd is refused with one line.

The reference is entkd's own forward with wespeaker's pooling variance floor (no wespeaker
implementation is installable here without its toolkit; scripts/check_wespeaker.py compares
against wespeaker's own source given a checkout).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from speaker.models import build
from speaker.models.ecapa_tdnn import ECAPATDNN
from speaker.models.heads import AAMSoftmax
from speaker.models.pooling import ASTP, TSTP
from speaker.teachers.load import load_teacher
from store.errors import UserError

SPEAKERS = ["spk_c", "spk_a", "spk_b"]


def wespeaker_eps(model: torch.nn.Module) -> torch.nn.Module:
    """The reference with wespeaker's pooling floor (1e-7), which the loader must set."""
    for m in model.modules():
        if isinstance(m, TSTP | ASTP):
            m.eps = 1e-7
    return model


def randomize_norms(model: torch.nn.Module, seed: int) -> None:
    """Running statistics away from (0, 1), so eval-mode BN is not an identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def wespeaker_resnet_keys(state: dict, blocks: tuple[int, ...]) -> dict:
    """entkd ``layers.{i}`` -> wespeaker ``layer{stage}.{j}`` (written here independently
    of the loader's own renaming)."""
    stage_of = [(s + 1, j) for s, n in enumerate(blocks) for j in range(n)]

    def name(key: str) -> str:
        m = re.match(r"layers\.(\d+)\.(.*)", key)
        if not m:
            return key
        stage, j = stage_of[int(m[1])]
        return f"layer{stage}.{j}.{m[2]}"

    return {name(k): v for k, v in state.items()}


def wespeaker_ecapa_keys(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        key = key.replace(".block.", ".se_res2block.")
        key = re.sub(r"se_res2block\.1\.convs\.(\d+)\.conv\.", r"se_res2block.1.convs.\1.", key)
        key = re.sub(r"se_res2block\.1\.convs\.(\d+)\.bn\.", r"se_res2block.1.bns.\1.", key)
        out[key] = value
    return out


def write_wespeaker(directory: Path, model_name: str, model_args: dict, state: dict,
                    head: AAMSoftmax, *, project_type: str = "arc_margin", fbank_bins: int = 80,
                    speed_perturb: bool = False, speakers: list[str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "projection.weight": head.weight.detach().clone()},
               directory / "avg_model.pt")
    config = {
        "model": model_name, "model_args": model_args, "num_epochs": 150,
        "projection_args": {"project_type": project_type, "scale": head.scale,
                            "easy_margin": False, "num_class": head.num_classes},
        "margin_update": {"initial_margin": 0.0, "final_margin": head.margin,
                          "increase_start_epoch": 20, "fix_start_epoch": 40},
        "dataset_args": {"resample_rate": 16000, "speed_perturb": speed_perturb,
                         "fbank_args": {"num_mel_bins": fbank_bins, "frame_shift": 10,
                                        "frame_length": 25, "dither": 1.0}},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    if speakers is not None:
        (directory / "speakers.txt").write_text("\n".join(speakers) + "\n")
    return directory


@pytest.fixture
def resnet(tmp_path: Path):
    torch.manual_seed(0)
    model = build("resnet34", base_width=8, embed_dim=32).eval()
    randomize_norms(model, 1)
    head = AAMSoftmax(32, len(SPEAKERS), scale=32.0, margin=0.2)
    state = wespeaker_resnet_keys(model.state_dict(), (3, 4, 6, 3))
    path = write_wespeaker(tmp_path / "r34", "ResNet34",
                           {"feat_dim": 80, "embed_dim": 32, "pooling_func": "TSTP",
                            "two_emb_layer": False}, state, head, speakers=SPEAKERS)
    return path, model, head, state


def test_resnet34_logits_are_the_models_own(resnet) -> None:
    path, model, head, _ = resnet
    teacher = load_teacher(f"wespeaker:{path}")
    feats = torch.randn(3, 120, 80, generator=torch.Generator().manual_seed(2))
    logits, emb = teacher(feats)
    with torch.no_grad():
        expected_emb = wespeaker_eps(model)(feats)
        expected = 32.0 * torch.nn.functional.linear(
            torch.nn.functional.normalize(expected_emb),
            torch.nn.functional.normalize(head.weight))
    torch.testing.assert_close(emb, expected_emb, rtol=0, atol=0)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert (teacher.scale, teacher.margin, teacher.margin_kind) == (32.0, 0.2, "aam")
    assert teacher.input_kind == "fbank" and teacher.arch == "wespeaker:ResNet34"
    assert teacher.label_map == {"speakers": SPEAKERS, "speeds": [1.0]}
    assert teacher.frontend.sample_rate == 16000 and teacher.epochs == 150


def test_ecapa_glob_c512_logits_are_the_models_own(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ECAPATDNN(512, feat_dim=80, embed_dim=24, global_context_att=True,
                      mfa_channels=1536).eval()
    randomize_norms(model, 3)
    head = AAMSoftmax(24, 6, scale=30.0, margin=0.3)
    path = write_wespeaker(tmp_path / "ecapa", "ECAPA_TDNN_GLOB_c512",
                           {"feat_dim": 80, "embed_dim": 24, "pooling_func": "ASTP"},
                           wespeaker_ecapa_keys(model.state_dict()), head,
                           project_type="add_margin", speed_perturb=True,
                           speakers=["a", "b"])
    teacher = load_teacher(f"wespeaker:{path}")
    feats = torch.randn(2, 90, 80, generator=torch.Generator().manual_seed(4))
    logits, _ = teacher(feats)
    with torch.no_grad():
        expected = head.cosine_logits(wespeaker_eps(model)(feats))
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert (teacher.scale, teacher.margin, teacher.margin_kind) == (30.0, 0.3, "am")
    # wespeaker's speed perturbation: each speed is a block of new classes
    assert teacher.label_map == {"speakers": ["a", "b"], "speeds": [1.0, 0.9, 1.1]}


def test_without_speaker_list_classes_are_the_manifests(resnet, tmp_path: Path) -> None:
    path, *_ = resnet
    (path / "speakers.txt").unlink()
    assert load_teacher(f"wespeaker:{path}").label_map is None


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(model="CAMPPlus"), "has no entkd counterpart"),
    (lambda c: c["model_args"].update(two_emb_layer=True), "two_emb_layer"),
    (lambda c: c["projection_args"].update(project_type="sphereface2"), "not supported"),
    (lambda c: c["dataset_args"]["fbank_args"].update(num_mel_bins=64), "cannot convert"),
    (lambda c: c["projection_args"].pop("scale"), "no scale"),
])
def test_refuses_what_does_not_map(resnet, change, message: str) -> None:
    path, *_ = resnet
    config = yaml.safe_load((path / "config.yaml").read_text())
    change(config)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=message) as info:
        load_teacher(f"wespeaker:{path}")
    assert "\n" not in str(info.value)


def test_refuses_weights_of_another_shape(resnet) -> None:
    path, model, head, state = resnet
    state = dict(state)
    state["seg_1.weight"] = torch.zeros(16, state["seg_1.weight"].shape[1])
    torch.save({**state, "projection.weight": head.weight.detach()}, path / "avg_model.pt")
    with pytest.raises(UserError, match="do not fit the architecture"):
        load_teacher(f"wespeaker:{path}")


def test_speaker_list_must_match_the_head(resnet) -> None:
    path, *_ = resnet
    (path / "speakers.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match="2 speakers x 1 speeds, but the head has 3 classes"):
        load_teacher(f"wespeaker:{path}")


@pytest.fixture
def toy_resnet(tmp_path: Path, toy_corpus: Path):
    """A wespeaker ResNet34 over the toy corpus's speakers (class order reversed)."""
    from speaker.io.manifest import Manifest

    speakers = Manifest.read(toy_corpus / "train" / "manifest.jsonl").speakers[::-1]
    torch.manual_seed(0)
    model = build("resnet34", base_width=4, embed_dim=16).eval()
    randomize_norms(model, 5)
    head = AAMSoftmax(16, len(speakers), scale=32.0, margin=0.2)
    path = write_wespeaker(tmp_path / "r34", "ResNet34",
                           {"feat_dim": 80, "embed_dim": 16, "pooling_func": "TSTP"},
                           wespeaker_resnet_keys(model.state_dict(), (3, 4, 6, 3)), head,
                           speakers=speakers)
    return path, wespeaker_eps(model), head, speakers


def test_dump_through_wespeaker(toy_resnet, toy_corpus: Path, tmp_path: Path,
                                dump_args: list[str]) -> None:
    import numpy as np

    from speaker.io.manifest import LabelMap
    from speaker.io.paths import DataPaths
    from speaker.views.augment import AugmentConfig
    from speaker.views.dataset import ViewRenderer
    from stage1_teacher import dump
    from store import StoreReader

    path, model, head, speakers = toy_resnet
    out = tmp_path / "w.zarr"
    dump.cli.main(["--teacher", f"wespeaker:{path}", "--data", str(toy_corpus), "--out",
                   str(out), *dump_args], standalone_mode=False)
    reader = StoreReader.open(out)
    spec, block = reader.spec, reader.read(0, 24)
    assert spec.label_map == {"speakers": speakers, "speeds": [1.0]}
    assert spec.teacher.arch == "wespeaker:ResNet34" and spec.extra["frontend"]["sample_rate"]
    paths = DataPaths(data=toy_corpus)
    render = ViewRenderer(paths.train_manifest(), LabelMap.from_dict(spec.label_map),
                          spec.crop_samples, AugmentConfig.from_dict(spec.augment),
                          paths.noise_bank(spec.sample_rate))
    feats = torch.stack([render(int(u), int(s), int(d))[0]
                         for u, s, d in zip(block.utt, block.start, block.seed, strict=True)])
    with torch.no_grad():
        logits = head.cosine_logits(model(feats)).numpy()
    rows = np.arange(len(block))
    np.testing.assert_allclose(block.target_logit, logits[rows, block.label], atol=1e-4)
    np.testing.assert_allclose(block.topk_logit.astype(np.float32),
                               np.take_along_axis(logits, block.topk_index.astype(int), 1),
                               rtol=2e-3, atol=2e-2)


def test_dump_refuses_another_sample_rate(toy_resnet, toy_corpus: Path, tmp_path: Path,
                                          dump_args: list[str], run_main) -> None:
    from stage1_teacher import dump

    path, *_ = toy_resnet
    config = yaml.safe_load((path / "config.yaml").read_text())
    config["dataset_args"]["resample_rate"] = 8000
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "w.zarr"
    result = run_main(dump.main, ["--teacher", f"wespeaker:{path}", "--data", str(toy_corpus),
                                  "--out", str(out), *dump_args])
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert "expects 8000 Hz" in result.error_lines[0] and not out.exists()

