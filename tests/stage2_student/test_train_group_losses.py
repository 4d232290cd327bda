"""``stage2_student.train --loss trkd`` and ``--loss dualgroup`` on the shared tiny cache,
and their options on the command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from stage2_student.train import cli


def train(args: list) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli.main([str(a) for a in args], standalone_mode=False)
    finally:
        torch.set_num_threads(before)


def one_epoch(student_run, out: Path) -> list:
    """The shared run's command (cached, 6 steps of 16 rows) for one epoch."""
    command = student_run.command(out)
    command[command.index("--epochs") + 1] = "1"
    return command


def test_trkd_trains_and_logs_its_cap_counter_per_epoch(student_cache, student_run,
                                                        tmp_path: Path, caplog):
    out = tmp_path / "trkd"
    with caplog.at_level(logging.INFO):
        train([*one_epoch(student_run, out), "--loss", "trkd", "--trkd-lambda-f", "4"])
    (epoch,) = json.loads((out / "results.json").read_text())["history"]
    assert epoch["kd"] > 0 and torch.isfinite(torch.tensor(epoch["loss"]))
    # k = 4 of 23 non-targets: tau = 1 at the start wants them all, so the cap binds there
    assert 0.0 < epoch["trkd_capped"] <= 1.0
    assert 0.05 < epoch["trkd_tau"] < 1.0  # the curriculum ran over the epoch
    assert any(f"trkd_capped={epoch['trkd_capped']:.4g}" in r.message for r in caplog.records)
    assert any("confusion set wanted more than k'=4" in r.message for r in caplog.records)
    options = json.loads((out / "config.json").read_text())["distill"]["options"]
    assert options == {"tau_start": 1.0, "tau_end": 0.05, "tau_epochs": 1.0, "lambda_m": 1.0,
                       "lambda_f": 4.0}


def test_dualgroup_trains(student_cache, student_run, tmp_path: Path):
    out = tmp_path / "dualgroup"
    train([*one_epoch(student_run, out), "--loss", "dualgroup", "--topk", "2",
           "--dualgroup-binary-entropy", "0.5"])
    (epoch,) = json.loads((out / "results.json").read_text())["history"]
    assert epoch["kd"] > 0 and torch.isfinite(torch.tensor(epoch["loss"]))
    config = json.loads((out / "config.json").read_text())["distill"]
    assert config["topk"] == 2
    assert config["options"] == {"primary_weight": 1.0, "binary_weight": 1.0,
                                 "binary_entropy": 0.5}


def test_help_names_every_loss_option_with_its_default_and_source():
    text = CliRunner().invoke(cli, ["--help"], terminal_width=200).output
    flags = {"--trkd-tau-start": "[default: 1.0]", "--trkd-tau-end": "[default: 0.05]",
             "--trkd-lambda-m": "[default: 1.0]", "--trkd-lambda-f": "[default: 8.0]",
             "--trkd-tau-epochs": "[default: the whole run]",
             "--dualgroup-primary-weight": "[default: 1.0]",
             "--dualgroup-binary-weight": "[default: 1.0]",
             "--dualgroup-binary-entropy": "off unless given"}
    options = text.split("Examples:")[0]  # the epilog's example runs use some flags too
    lines = " ".join(options.split()).split(" --")
    for flag, default in flags.items():
        (line,) = [f"--{x}" for x in lines if x.startswith(flag[2:] + " ")]
        assert default in line and "Default from:" in line, line
    assert text.count("arXiv 2601.14699") == 4 and "ours" in text


@pytest.mark.parametrize(("extra", "message"), [
    (["--loss", "dkd", "--trkd-tau-end", "0.1"], "--trkd-tau-end applies to --loss trkd"),
    (["--loss", "trkd", "--trkd-tau-end", "0"], "tau_end must be in (0, 1]"),
    (["--loss", "dualgroup", "--dualgroup-binary-entropy", "1.5"], "binary_entropy"),
])
def test_bad_loss_options_are_refused_before_training(student_run, tmp_path: Path, extra,
                                                      message):
    from store.errors import UserError

    out = tmp_path / "run"
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train([*one_epoch(student_run, out), *extra])
    assert not out.exists()
