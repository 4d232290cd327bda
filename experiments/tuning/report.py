"""The tuning's outcome: each setting's dev EERs per value and seed, the value the rule
chooses, and the page and JSON that say so (``tuning.md``, ``tuning.json``; the recipes read
the JSON: :func:`experiments.recipes.load_tuning`).

The rule: the value with the lowest mean dev EER over the seeds, except that every value
within ``TIE_POINTS`` EER points of it ties with it, and among tied values the setting's
preferred one (the paper's or trainer's default) wins.

Example::

    >>> from experiments.tuning.grid import QUICK
    >>> choose(QUICK[0], {(3e-3,): 0.200, (1e-2,): 0.197})   # a tie: the default stays
    (0.003,)
    >>> choose(QUICK[0], {(3e-3,): 0.200, (1e-2,): 0.180})
    (0.01,)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from experiments.machine import machine
from experiments.runs import Layout
from experiments.tuning.grid import NOT_TUNED, SEEDS, TIE_POINTS, Setting, cell_name, run_name

RULE = (f"lowest mean dev EER over the seeds; values within {TIE_POINTS:g} EER points of the "
        "lowest tie with it, and a tie goes to the setting's preferred value (the paper's or "
        "the trainer's default, else the value before tuning)")


def choose(setting: Setting, means: dict[tuple, float]) -> tuple:
    """The value the rule picks from ``means`` (value -> mean dev EER, as a fraction)."""
    best = min(means.values())
    tied = [v for v in setting.values if v in means and means[v] <= best + TIE_POINTS / 100]
    return setting.prefer if setting.prefer in tied else min(tied, key=means.__getitem__)


def dev_eers(setting: Setting, layout: Layout,
             seeds: tuple[int, ...] = SEEDS) -> dict[tuple, list[float | None]]:
    """value -> the dev EER of each seed's run (None: not evaluated yet)."""
    out = {}
    for value in setting.values:
        cell = cell_name(setting, value)
        out[value] = [(layout.result(run_name(cell, s)) or {}).get("eer") for s in seeds]
    return out


def outcome(grid: tuple[Setting, ...], layout: Layout, seeds: tuple[int, ...] = SEEDS
            ) -> list[dict[str, Any]]:
    """Per setting: its values' dev EERs and means, and the chosen value (None until every
    run of the setting has been evaluated)."""
    rows = []
    for setting in grid:
        eers = dev_eers(setting, layout, seeds)
        done = all(e is not None for per_seed in eers.values() for e in per_seed)
        means = {v: sum(e) / len(e) for v, e in eers.items() if None not in e}
        rows.append({
            "keys": list(setting.keys), "arch": setting.arch, "loss": setting.loss,
            "prefer": list(setting.prefer), "why": setting.why,
            "values": [{"value": list(v), "label": setting.label(v),
                        "cell": cell_name(setting, v), "dev_eer": eers[v],
                        "mean": means.get(v)} for v in setting.values],
            "chosen": list(choose(setting, means)) if done else None,
        })
    return rows


def tuning_json(rows: list[dict], grid_name: str, seeds: tuple[int, ...],
                inputs: dict[str, Any]) -> dict[str, Any]:
    """What ``tuning.json`` holds; ``chosen`` has the settings whose runs all finished."""
    chosen = {k: v for r in rows if r["chosen"] is not None
              for k, v in zip(r["keys"], r["chosen"], strict=True)}
    return {"written": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "grid": grid_name,
            "seeds": len(seeds), "split": "dev", "rule": RULE, "tie_points": TIE_POINTS,
            "inputs": inputs, "chosen": chosen, "settings": rows,
            "not_tuned": NOT_TUNED if grid_name == "full" else {}}


def _pct(eer: float | None) -> str:
    return "-" if eer is None else f"{100 * eer:.2f}"


def tuning_page(saved: dict[str, Any], command: str) -> str:
    """``tuning.md``: how the settings were chosen, and one dev table per setting."""
    inputs = saved["inputs"]
    lines = [
        "# Settings chosen on the dev split",
        "",
        f"Written by `scripts/tune.py` (`{command}`) from its runs; do not edit by hand. "
        "`experiments/recipes.py` reads the chosen values from `tuning.json` beside this page.",
        "",
        f"- Written {saved['written']} on {machine()}; grid `{saved['grid']}`, "
        f"{saved['seeds']} seeds per cell (paired: seed i of every cell shares initialisation "
        "and data order).",
        f"- Inputs: the demo's corpus, teacher and cache ({inputs['rows']:,} cached rows, "
        f"{inputs['crop_seconds']:g}-s crops); trained for "
        + ", ".join(f"{a} {e}" for a, e in inputs["epochs"].items()) + " epochs.",
        f"- Scored on the **dev** split only ({inputs['dev_trials']:,} trials, "
        f"{inputs['dev_speakers']} speakers of their own): every evaluation is "
        "`python -m stage2_student.evaluate --split dev`, and the training runs get no dev or "
        "test split. The test trials are not scored by the tuning.",
        "- One setting at a time is varied around the values before tuning "
        "(`experiments.recipes.BASE`); optimizer settings (LR, batch) are tuned with CE alone, "
        "the KD warm-up and each loss's options with that loss. The teacher's LR is chosen by "
        "the teacher's own dev EER (each candidate teacher trained from scratch); the "
        "students' cells learn from the demo's teacher.",
        f"- Rule: {saved['rule']}.",
        "",
        "## Chosen",
        "",
        "| setting | chosen | tuned with | preferred on a tie |",
        "|---|---|---|---|",
    ]
    for r in saved["settings"]:
        label = next((v["label"] for v in r["values"] if v["value"] == r["chosen"]),
                     "pending (runs unfinished)")
        lines.append(f"| {' + '.join(r['keys'])} | {label} | {r['arch']}, {r['loss']} | "
                     f"{r['why']} |")
    for key, why in saved["not_tuned"].items():
        lines.append(f"| {key} | not tuned | | {why} |")
    for r in saved["settings"]:
        seeds = len(r["values"][0]["dev_eer"])
        lines += ["", f"## {' + '.join(r['keys'])} ({r['arch']}, {r['loss']})", "",
                  "| value | " + " | ".join(f"dev EER seed {s} (%)" for s in range(seeds))
                  + " | mean (%) | |", "|---|" + "---:|" * (seeds + 1) + "---|"]
        for v in r["values"]:
            mark = "**chosen**" if v["value"] == r["chosen"] else ""
            lines.append(f"| {v['label']} | " + " | ".join(_pct(e) for e in v["dev_eer"])
                         + f" | {_pct(v['mean'])} | {mark} |")
    return "\n".join(lines) + "\n"


def dumps(saved: dict[str, Any]) -> str:
    """``tuning.json``'s text."""
    return json.dumps(saved, indent=1) + "\n"
