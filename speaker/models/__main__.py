"""``python -m speaker.models``: parameter counts (classifier excluded) of every architecture.

Models are built on the ``meta`` device, so even WavLM Large is counted in about a second
without allocating its weights.
"""

from __future__ import annotations

import json
import logging

import click
import torch

from speaker.models import architectures, build, count_parameters
from store.cli import parse_options, run, setup_logging
from store.errors import UserError

log = logging.getLogger(__name__)

# name -> (arch, kwargs, wespeaker's published count or None). The CAM++ figure is
# wespeaker's at embed 512; "campp" uses the contract's embed 192 (6.85M, -4.6%), and
# "campp_e512" shows the implementation matches wespeaker exactly at equal settings.
VARIANTS: dict[str, tuple[str, dict, float | None]] = {
    "xvector": ("xvector", {}, 4.61e6),
    "resnet34": ("resnet34", {}, 6.63e6),
    "campp": ("campp", {}, 7.18e6),
    "campp_e512": ("campp", {"embed_dim": 512}, 7.18e6),
    "ecapa_c512": ("ecapa", {"channels": 512}, 6.19e6),
    "ecapa_c1024": ("ecapa", {"channels": 1024}, 14.65e6),
    "wavlm_ecapa": ("wavlm_ecapa", {}, None),
}


def count(arch: str, kwargs: dict) -> int:
    """Parameters of ``build(arch, **kwargs)``, counted without allocating weights.

    Example:
        >>> count("xvector", {})
        4610524
    """
    with torch.device("meta"):
        return count_parameters(build(arch, **kwargs))


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""Examples:

\b
  python -m speaker.models
  python -m speaker.models --json | tail -1
  python -m speaker.models --arch resnet34 --arch-opt base_width=8 --arch-opt embed_dim=128
"""
)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line {name: count}.")
@click.option("--arch", help=f"Count only this architecture (one of {', '.join(architectures())}).")
@click.option("--arch-opt", "options", multiple=True, metavar="KEY=VALUE",
              help="Architecture argument for --arch, repeatable (as in the training CLIs).")
@click.option("-v", "--verbose", is_flag=True)
def cli(as_json: bool, arch: str | None, options: tuple[str, ...], verbose: bool) -> None:
    """Print each architecture's parameter count, excluding the classifier (AAM head)."""
    setup_logging(verbose)
    if arch is None:
        if options:
            raise UserError("--arch-opt KEY=VALUE needs --arch")
        rows = VARIANTS
    else:
        rows = {arch: (arch, parse_options(options), None)}
    counts = {name: count(arch_name, kwargs) for name, (arch_name, kwargs, _) in rows.items()}
    click.echo(f"{'name':<12} {'params':>13} {'wespeaker':>10} {'diff':>7}  build")
    for name, (arch_name, kwargs, reference) in rows.items():
        n = counts[name]
        ref = f"{reference / 1e6:.2f}M" if reference else "-"
        diff = f"{100 * (n / reference - 1):+.1f}%" if reference else "-"
        call = ", ".join([repr(arch_name)] + [f"{k}={v!r}" for k, v in kwargs.items()])
        click.echo(f"{name:<12} {n:>13,} {ref:>10} {diff:>7}  build({call})")
    if as_json:
        click.echo(json.dumps(counts))


if __name__ == "__main__":
    run(cli)
