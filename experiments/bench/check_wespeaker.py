"""Check ``--teacher wespeaker:DIR`` against wespeaker's own model code.

Builds wespeaker's ResNet34, ECAPA_TDNN_GLOB_c512 and ECAPA_TDNN_c1024 from a wespeaker
checkout (random weights and BN statistics), saves each as wespeaker does (``avg_model.pt``
with ``projection.weight``, ``config.yaml``), loads it through entkd and prints the largest
difference of embeddings and ``scale * cos`` logits on random fbank. Not a test: wespeaker
is not installable as a library here.

Usage::

    git clone https://github.com/wenet-e2e/wespeaker /tmp/wespeaker
    python scripts/check_wespeaker.py --wespeaker-src /tmp/wespeaker
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import click
import torch
import yaml

from speaker.teachers.load import load_teacher

MODELS = {
    "ResNet34": ("resnet", {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP",
                            "two_emb_layer": False}),
    "ECAPA_TDNN_GLOB_c512": ("ecapa_tdnn", {"feat_dim": 80, "embed_dim": 192,
                                            "pooling_func": "ASTP"}),
    "ECAPA_TDNN_c1024": ("ecapa_tdnn", {"feat_dim": 80, "embed_dim": 192,
                                        "pooling_func": "ASTP"}),
}


def wespeaker_module(src: Path, name: str):
    """``wespeaker.models.<name>`` from a checkout, without importing the toolkit's package
    ``__init__`` (which needs its CLI dependencies)."""
    for package in ("wespeaker", "wespeaker.models"):
        if package not in sys.modules:
            spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
            module = importlib.util.module_from_spec(spec)
            module.__path__ = [str(src / package.replace(".", "/"))]
            sys.modules[package] = module
    return importlib.import_module(f"wespeaker.models.{name}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--wespeaker-src", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="A checkout of wespeaker (its wespeaker/models/ is imported).")
def main(wespeaker_src: Path) -> None:
    """Check ``--teacher wespeaker:DIR`` against wespeaker's own model code.

    \b
    Example:
      python scripts/check_wespeaker.py --wespeaker-src ~/src/wespeaker
    """
    torch.manual_seed(0)
    projections = wespeaker_module(wespeaker_src, "projections")
    results = {}
    for name, (module, model_args) in MODELS.items():
        model = getattr(wespeaker_module(wespeaker_src, module), name)(**model_args).eval()
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        head = projections.ArcMarginProduct(model_args["embed_dim"], 100, scale=32.0, margin=0.2)
        model.add_module("projection", head)
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            torch.save(model.state_dict(), directory / "avg_model.pt")
            (directory / "config.yaml").write_text(yaml.safe_dump({
                "model": name, "model_args": model_args,
                "projection_args": {"project_type": "arc_margin", "scale": 32.0},
                "margin_update": {"final_margin": 0.2},
                "dataset_args": {"resample_rate": 16000, "fbank_args": {
                    "num_mel_bins": 80, "frame_length": 25, "frame_shift": 10}}}))
            teacher = load_teacher(f"wespeaker:{directory}")
        feats = torch.randn(4, 200, 80, generator=g)
        with torch.no_grad():
            emb = model(feats)[-1]
            ref = 32.0 * torch.nn.functional.linear(torch.nn.functional.normalize(emb),
                                                    torch.nn.functional.normalize(head.weight))
        logits, ours = teacher(feats)
        results[name] = {"max_abs_logit_diff": float((logits - ref).abs().max()),
                         "max_abs_embedding_diff": float((ours - emb).abs().max())}
        print(f"{name:22s} logits {results[name]['max_abs_logit_diff']:.3g}  "
              f"embeddings {results[name]['max_abs_embedding_diff']:.3g}")
    print(json.dumps(results))
