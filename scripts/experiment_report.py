"""docs/RESULTS.md and its plots, from the result files of ``scripts/experiments.py`` alone.

Noise and verdicts. Each model's result keeps the EERs of the same speaker-bootstrap
replicates (``experiment_runs.N_BOOT``; replicate b resamples the same test speakers for
every model), so the EER difference of two groups of runs (seeds paired by index) has a
paired bootstrap interval: the 2.5/97.5 % quantiles over replicates of (mean over A's seeds
- mean over B's seeds). An ordering is claimed only where that interval excludes 0 or the
difference of the means exceeds the seed spread (the larger of the two groups' std);
otherwise the report says "within noise". Missing runs are reported as "not run".
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import cores, cpu_name, write_atomic
from experiment_runs import N_BOOT, Layout, Run

RESUMED = " (resumed after a kill: its last attempt's epochs)"
PAPER_GAIN = 13.67  # % average relative EER gain over embedding-level and conventional KD


class Results:
    """Read access to the finished runs of a plan."""

    def __init__(self, runs: list[Run], layout: Layout) -> None:
        self.runs = {r.name: r for r in runs}
        self.layout = layout
        self.res = {r.name: layout.result(r.name) for r in runs}

    def get(self, name: str) -> dict | None:
        return self.res.get(name)

    def seeds(self, pattern: str) -> list[dict]:
        """Results of ``pattern.format(seed=s)`` for every planned seed, in seed order."""
        out = []
        for s in range(10):
            r = self.res.get(pattern.format(seed=s))
            if r is not None:
                out.append(r)
        return out


def _eer(rs: list[dict]) -> float:
    """Mean EER over seeds."""
    return statistics.fmean(r["eer"] for r in rs)


def _pct(r: dict | None) -> str:
    return f"{100 * r['eer']:.2f}" if r else "not run"


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def fmt_ms(xs: list[float], scale: float = 100.0, digits: int = 2) -> str:
    m, s = _mean_std([scale * x for x in xs])
    if not xs:
        return "not run"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if len(xs) > 1 else "")


def paired(a: list[dict], b: list[dict]) -> dict[str, float] | None:
    """EER difference mean(A) - mean(B) (points), its paired bootstrap 95 % interval and the
    seed spread; seeds paired by index (only seeds both have)."""
    n = min(len(a), len(b))
    if n == 0:
        return None
    a, b = a[:n], b[:n]
    boot = min(len(r["eer_boot"]) for r in a + b)
    ra = np.mean([r["eer_boot"][:boot] for r in a], axis=0)
    rb = np.mean([r["eer_boot"][:boot] for r in b], axis=0)
    diff = 100 * (statistics.fmean(r["eer"] for r in a) - statistics.fmean(r["eer"] for r in b))
    lo, hi = (100 * np.quantile(ra - rb, [0.025, 0.975])) if boot else (np.nan, np.nan)
    spread = max(_mean_std([100 * r["eer"] for r in a])[1],
                 _mean_std([100 * r["eer"] for r in b])[1])
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "spread": spread, "seeds": n}


def verdict(p: dict[str, float] | None, a: str, b: str) -> str:
    """'A below B', 'A above B' or 'within noise' (see the module doc)."""
    if p is None:
        return "not run"
    beyond_boot = p["lo"] > 0 or p["hi"] < 0
    beyond_seeds = not np.isnan(p["spread"]) and abs(p["diff"]) > p["spread"]
    if not (beyond_boot or beyond_seeds):
        return "within noise"
    why = " and ".join(w for w, ok in (("bootstrap", beyond_boot), ("seed spread", beyond_seeds))
                       if ok)
    return f"{a} {'below' if p['diff'] < 0 else 'above'} {b} (beyond the {why})"


def fmt_paired(p: dict[str, float] | None, unit: str = "") -> str:
    if p is None:
        return "not run"
    return f"{p['diff']:+.2f}{unit} [{p['lo']:+.2f}, {p['hi']:+.2f}]"


def claim(what: str, p: dict[str, float] | None, a: str, b: str) -> str:
    """One verdict line: '- WHAT: +d points [lo, hi]: verdict.'"""
    if p is None:
        return f"- {what}: not run."
    return f"- {what}: {fmt_paired(p, ' points')}: {verdict(p, a, b)}."


def _plot(path: Path, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from store.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.5))
    draw(ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _machine() -> str:
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu_name()}, {cores()} cores usable, {mem:.0f} GiB, {platform.system()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}")


class Report:
    def __init__(self, runs: list[Run], layout: Layout, settings: dict[str, Any],
                 path: Path) -> None:
        self.r = Results(runs, layout)
        self.layout, self.settings, self.path = layout, settings, path
        self.plots = layout.results / "plots"
        self.summary: dict[str, Any] = {}
        self.lines: list[str] = []

    def rel(self, p: Path) -> str:
        return os.path.relpath(p, self.path.parent)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    # ---- header ---------------------------------------------------------------------------

    def header(self) -> None:
        done = sum(r is not None for r in self.r.res.values())
        walls = [r["wall_s"] for r in self.r.res.values() if r is not None]
        quick = self.settings["size"] == "quick"
        self.add("# Results: the paper's claims and the cache's worth", "",
                 "Written by `scripts/experiments.py` from the result files under "
                 f"`{self.rel(self.layout.results)}/runs/` (do not edit by hand: rerun "
                 "`make results`, or `scripts/experiments.py --report-only`).", "")
        if quick:
            self.add("**This is a `--quick` smoke run: tiny corpus and epochs. Its numbers "
                     "test the pipeline, not the claims.**", "")
        sessions = self.layout.results / "sessions.json"
        wall = sum(s["wall_s"] for s in json.loads(sessions.read_text())) if sessions.exists() \
            else float("nan")
        self.add(f"- Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on: {_machine()}.",
                 f"- Runs finished: {done} of {len(self.r.res)}; wall time of the "
                 f"`experiments.py` sessions that ran them: {wall / 60:.1f} min (sum of the "
                 f"runs' own wall times: {sum(walls) / 60:.1f} min, students "
                 f"{self.settings['lanes']} at a time).")
        self.summary.update(runs_finished=done, runs_planned=len(self.r.res),
                            measured_minutes=round(wall / 60, 1), quick=quick)
        stale = [n for n, r in self.r.res.items() if r is not None and r["kind"] == "student"
                 and r.get("teacher_sha256") != (self.r.get(r["meta"]["cache"]) or {}).get(
                     "teacher_sha256")]
        if stale:
            self.add(f"- **Warning**: {len(stale)} students learnt from an earlier dump of their "
                     "cache (its teacher was retrained since, e.g. in a session without the "
                     "working folder); delete their result.json files and rerun: "
                     + ", ".join(stale) + ".")
        corpus = self.r.get("corpus")
        if corpus is not None:
            c = corpus["corpus"]
            self.add(f"- Corpus: synthetic (`speaker.toy`), {json.dumps(c)}.")
        else:
            self.add(f"- Corpus: the prepared data root `{self.settings['data']}`.")
        ev = next((r for r in self.r.res.values() if r is not None and "trials" in r), None)
        main = self.r.get("dump-main")
        if main is not None:
            self.add(f"- Training set: {main['classes']} speakers, "
                     f"{main['rows'] // self.settings['views']} utterances.")
        if ev is not None:
            self.add(f"- Test: {ev['trials']:,} trials ({ev['target_trials']:,} target) over "
                     f"{ev['test_speakers']} test speakers.")
            self.summary.update(trials=ev["trials"], test_speakers=ev["test_speakers"])
        self.add("- Noise: EER is given as mean ± std over seeds; differences with their "
                 f"paired 95 % interval from {N_BOOT} bootstrap resamplings of the test "
                 "speakers (the same resamplings for every model, seeds paired). An ordering "
                 "is claimed only where the interval excludes 0 or the difference exceeds "
                 "the seed std; otherwise \"within noise\".",
                 "- Every setting (`scripts/experiments.py` `Size`, `LOSSES`; "
                 "`scripts/recipes.py`):", "",
                 "```json", json.dumps(self.settings, indent=None, default=str), "```", "")

    # ---- 1. losses ------------------------------------------------------------------------

    def section1(self) -> None:
        s = self.settings
        self.add("## 1. Loss comparison (one cache, k = {})".format(s["topk"]), "",
                 "Students read k' = {} of the cache's non-target speakers. `emb`: embedding "
                 "KD (the student's embedding has the teacher's size). `kd-w3`: plain KD "
                 "weighted like dkd's total (alpha + beta = 3); `dkd-b1`: dkd with beta = "
                 "alpha; `dkd-b8t4`: beta 8, T 4.".format(s["topk"]), "")
        teacher = self.r.get("teacher")
        t_eer = 100 * teacher["eer"] if teacher else float("nan")
        self.add(f"Teacher: EER {t_eer:.2f} %" + (
            f" (95 % CI {100 * teacher['eer_ci95'][0]:.2f}-{100 * teacher['eer_ci95'][1]:.2f})"
            if teacher else " (not run)") + ".", "",
            "| student | loss | seeds | EER (%) | minDCF 0.05 | minDCF 0.01 | rel. EER vs ce "
            "| EER − ce (points) [95 %] | verdict vs ce |", "|---|---|---|---|---|---|---|---|---|")
        short = s["short"]
        ce_gap = []
        for arch, losses in (("xvector", s["xv_losses"]), ("resnet34", s["other_losses"]),
                             ("campp", s["other_losses"])):
            ce = self.r.seeds(f"{short[arch]}-ce-s{{seed}}")
            if ce and teacher:
                ce_gap.append(100 * statistics.fmean(r["eer"] for r in ce) - t_eer)
            for loss in losses:
                rs = self.r.seeds(f"{short[arch]}-{loss}-s{{seed}}")
                run = self.r.runs.get(f"{short[arch]}-{loss}-s0")
                if not rs:
                    why = run.missing if run and run.missing else "not run"
                    self.add(f"| {arch} | {loss} | 0 | {why} | | | | | |")
                    continue
                rel = "" if not ce or loss == "ce" else f"{100 * (_eer(rs) / _eer(ce) - 1):+.1f} %"
                p = None if loss == "ce" else paired(rs, ce)
                self.add(f"| {arch} | {loss} | {len(rs)} | {fmt_ms([r['eer'] for r in rs])} | "
                         f"{fmt_ms([r['min_dcf_0.05'] for r in rs], 1, 3)} | "
                         f"{fmt_ms([r['min_dcf_0.01'] for r in rs], 1, 3)} | {rel} | "
                         f"{'' if loss == 'ce' else fmt_paired(p)} | "
                         f"{'' if loss == 'ce' else verdict(p, loss, 'ce')} |")
        self.add("")
        ahead = len(ce_gap) == 3 and min(ce_gap) >= 3.0
        self.add("- Teacher at least 3 EER points ahead of every CE student: " + (
            "not measured (CE students missing)" if len(ce_gap) < 3 else
            f"{'yes' if ahead else '**no**'} (smallest gap {min(ce_gap):.2f} points)") + ".")
        self.summary["teacher_3_points_ahead_of_every_ce"] = ahead
        # the orderings the paper and the controls are about (x-vector)
        claims = [("dkd", "ce"), ("dkd", "kd"), ("dkd", "emb"), ("dkd", "kd-w3"),
                  ("dkd", "dkd-b1"), ("dkd-b8t4", "dkd"), ("trkd", "dkd"), ("dualgroup", "dkd")]
        for a, b in claims:
            p = paired(self.r.seeds(f"xv-{a}-s{{seed}}"), self.r.seeds(f"xv-{b}-s{{seed}}"))
            self.add(claim(f"x-vector {a} − {b}", p, a, b))
        for arch in ("resnet34", "campp"):
            for a, b in (("dkd", "ce"), ("dkd", "kd"), ("trkd", "dkd")):
                p = paired(self.r.seeds(f"{short[arch]}-{a}-s{{seed}}"),
                           self.r.seeds(f"{short[arch]}-{b}-s{{seed}}"))
                self.add(claim(f"{arch} {a} − {b}", p, a, b))
        dkd = self.r.seeds("xv-dkd-s{seed}")
        gains = []
        for base in ("emb", "kd"):
            rs = self.r.seeds(f"xv-{base}-s{{seed}}")
            if rs and dkd:
                gains.append(100 * (_eer(rs) - _eer(dkd)) / _eer(rs))
        if len(gains) == 2:
            g = statistics.fmean(gains)
            ok = all(verdict(paired(dkd, self.r.seeds(f"xv-{b}-s{{seed}}")), "dkd", b)
                     .startswith("dkd below") for b in ("emb", "kd"))
            self.add(f"- The paper's {PAPER_GAIN} % average relative EER gain over embedding-level "
                     f"and conventional KD: we see {g:.1f} % (x-vector; emb {gains[0]:.1f} %, kd "
                     f"{gains[1]:.1f} %), {'beyond' if ok else 'not beyond'} noise on both.")
            self.summary["dkd_rel_gain_over_emb_kd_pct"] = round(g, 2)
        self.add("")

    # ---- 2. cached vs online --------------------------------------------------------------

    def section2(self) -> None:
        s = self.settings
        online = self.r.get("xv-dkd-online-s0")
        main = self.r.get("dump-main")
        kall = f"C-1 = {main['k']}" if main else "C-1"
        self.add("## 2. Cached vs online KD (x-vector dkd, seed 0, same views)", "",
                 "Online: the live teacher's full logits on the same crops. Wall time "
                 "per epoch includes start-up and one-thread training; two runs shared the "
                 "cores at a time.", "",
                 "| teacher signal | EER (%) | EER − online (points) [95 %] | verdict | "
                 "wall s / epoch |", "|---|---|---|---|---|")
        rows = [("online (full logits)", "xv-dkd-online-s0")]
        rows += [(f"cache k = {k}", f"xv-dkd-k{k}-s0" if k != s["topk"] else "xv-dkd-s0")
                 for k in s["topk_grid"]]
        rows += [(f"cache k = {kall}", "xv-dkd-kall-s0")]
        for label, name in rows:
            r = self.r.get(name)
            if r is None:
                self.add(f"| {label} | not run | | | |")
                continue
            p = None if name.endswith("online-s0") or online is None else paired([r], [online])
            self.add(f"| {label} | {100 * r['eer']:.2f} | "
                     f"{'' if name.endswith('online-s0') else fmt_paired(p)} | "
                     f"{'' if name.endswith('online-s0') else verdict(p, 'cache', 'online')} | "
                     f"{r['wall_s_per_epoch']:.1f}{RESUMED if r['resumed'] else ''} |")
        sd = _mean_std([100 * r["eer"] for r in self.r.seeds("xv-dkd-s{seed}")])[1]
        self.add("", f"One seed per row: the seed std of the x-vector dkd EER (section 1) is "
                 f"{sd:.2f} points, for scale; verdicts here rest on the paired bootstrap.")
        k32 = self.r.get("xv-dkd-s0")
        if k32 and online:
            p = paired([k32], [online])
            ratio = online["wall_s_per_epoch"] / k32["wall_s_per_epoch"]
            self.summary.update(cached_k32_minus_online_eer=round(p["diff"], 3),
                                cached_k32_minus_online_eer_ci95=[round(p["lo"], 3),
                                                                  round(p["hi"], 3)],
                                online_epoch_over_cached_epoch=round(ratio, 3))
            promise = verdict(p, "cache", "online") == "within noise"
            self.add("", f"- The cache's promise (k = {s['topk']} within noise of online, at a "
                     "fraction "
                     f"of the time): EER gap {fmt_paired(p)} points, "
                     f"{'within noise' if promise else '**not** within noise'}; an online epoch "
                     f"takes {ratio:.2f}x a cached one.")
        self.add("")

    # ---- 3. speakers ----------------------------------------------------------------------

    def section3(self) -> None:
        s = self.settings
        self.add("## 3. Non-target speakers (same number of training utterances)", "",
                 f"Teacher and students trained on a share of the speakers, each keeping "
                 f"{100 * s['spk_utterances']:.0f} % of all utterances (the paper's first "
                 "claim: more non-target speakers help). Student epochs scaled so every "
                 "student takes the same number of steps as in section 1.", "",
                 "| speakers (share) | utterances | teacher EER | ce EER | dkd EER | "
                 "dkd − ce [95 %] | verdict |", "|---|---|---|---|---|---|---|")
        pts = {"ce": [], "dkd": []}
        for share in s["spk_shares"]:
            tag = f"spk{round(100 * share)}"
            sub, t = self.r.get(f"subset-{tag}"), self.r.get(f"teacher-{tag}")
            ce, dkd = (self.r.seeds(f"xv-{loss}-{tag}-s{{seed}}") for loss in ("ce", "dkd"))
            p = paired(dkd, ce)
            spk = sub["speakers"] if sub else None
            self.add(f"| {spk if spk else '?'} ({100 * share:.0f} %) | "
                     f"{sub['utterances'] if sub else '?'} | "
                     f"{_pct(t)} | {fmt_ms([r['eer'] for r in ce])} | {fmt_ms([r['eer'] for r in dkd])} | "
                     f"{fmt_paired(p)} | {verdict(p, 'dkd', 'ce')} |")
            for loss, rs in (("ce", ce), ("dkd", dkd)):
                if rs and spk:
                    pts[loss].append((spk, *_mean_std([100 * r["eer"] for r in rs])))
        lo_tag, hi_tag = (f"spk{round(100 * x)}" for x in (min(s["spk_shares"]),
                                                           max(s["spk_shares"])))
        self.add("")
        for loss in ("ce", "dkd"):
            p = paired(self.r.seeds(f"xv-{loss}-{hi_tag}-s{{seed}}"),
                       self.r.seeds(f"xv-{loss}-{lo_tag}-s{{seed}}"))
            self.add(claim(f"{loss}: all speakers − fewest speakers", p, "more speakers",
                           "fewer"))
        if any(pts.values()):
            path = self.plots / "speakers.png"

            def draw(ax) -> None:
                for loss, xs in pts.items():
                    if xs:
                        x, m, sd = zip(*xs, strict=True)
                        ax.errorbar(x, m, yerr=[0 if np.isnan(v) else v for v in sd],
                                    marker="o", capsize=3, label=loss)
                ax.set_xlabel("training speakers (same number of utterances)")
                ax.set_ylabel("EER (%)")
                ax.legend()

            _plot(path, draw)
            self.add("", f"![EER against the number of training speakers]({self.rel(path)})")
        self.add("")

    # ---- 4. views -------------------------------------------------------------------------

    def section4(self) -> None:
        s = self.settings
        self.add("## 4. Views per utterance (x-vector dkd, k = {}, seed 0)".format(s["topk"]), "",
                 "Same number of training crops for every E (epochs = "
                 f"{dict(s['student_epochs'])['xvector']} x {s['views']} / E).", "",
                 "| E | rows | soft-label bytes | bytes stored (all arrays) | dump s | EER (%) | "
                 "EER − E=1 [95 %] |", "|---|---|---|---|---|---|---|")
        e1 = self.r.get(f"xv-dkd-E{min(s['views_grid'])}-s0")
        pts = []
        for e in s["views_grid"]:
            d, st = self.r.get(f"dump-E{e}"), self.r.get(f"xv-dkd-E{e}-s0")
            p = paired([st], [e1]) if st and e1 and st is not e1 else None
            dumped = (f"{d['rows']} | {d['soft_label_bytes']:,} | {d['stored_bytes']:,} | "
                      f"{d['wall_s']:.0f}") if d else "not run | | |"
            self.add(f"| {e} | {dumped} | {_pct(st)} | {fmt_paired(p) if p else ''} |")
            if st and d:
                pts.append((e, 100 * st["eer"], d["soft_label_bytes"] / 1e6, d["wall_s"]))
        if pts:
            path = self.plots / "views.png"

            def draw(ax) -> None:
                e, eer, mb, _ = zip(*pts, strict=True)
                ax.plot(e, eer, marker="o", label="EER (%)")
                ax.set_xscale("log", base=2)
                ax.set_xlabel("views per utterance E")
                ax.set_ylabel("EER (%)")
                ax2 = ax.twinx()
                ax2.plot(e, mb, marker="s", color="gray", label="soft labels (MB)")
                ax2.set_ylabel("soft-label MB")

            _plot(path, draw)
            self.add("", f"![EER and cache size against E]({self.rel(path)})")
        self.add("")

    # ---- 5. confidence --------------------------------------------------------------------

    def section5(self) -> None:
        self.add("## 5. Teacher confidence", "",
                 "`store stats` of every cache: the teacher's target probability over the "
                 "cached rows (T = 1) and the non-target mass its top-k' keeps. A teacher near "
                 "p_target = 1 on every row transfers little through TCKD or plain KD.", "",
                 "| cache | teacher | teacher EER | rows | median p_target | rows with "
                 "p_target > 0.9 | non-target mass kept by k' = 4 / 8 / 32 |",
                 "|---|---|---|---|---|---|---|")
        for name, run in self.r.runs.items():
            if run.kind != "dump":
                continue
            d = self.r.get(name)
            if d is None:
                self.add(f"| {name} | {run.meta['teacher']} | | not run | | | |")
                continue
            st = d["stats"]
            t = self.r.get(run.meta["teacher"])
            hist, edges = np.array(st["target_prob_hist"]), np.array(st["bin_edges"])
            high = hist[edges[:-1] >= 0.9 - 1e-9].sum() / max(1, hist.sum())
            kept = st["kept_mass_mean"]
            kk = " / ".join(f"{kept[k - 1]:.3f}" if k <= len(kept) else "-" for k in (4, 8, 32))
            plot = self.plots / f"{name}-stats.png"
            self.add(f"| [{name}]({self.rel(plot)}) | {run.meta['teacher']} | "
                     f"{_pct(t)} | {st['rows']} | {st['target_prob_median']:.3f} | {100 * high:.1f} % | "
                     f"{kk} |")
        self.add("", "Loss ordering under the less-trained teacher (`teacher-weak`, "
                 f"{self.settings['weak_teacher_epochs']} epochs instead of "
                 f"{self.settings['teacher_epochs']}; its cache relabels the main cache's crops) "
                 "against the main teacher (x-vector, same seeds):", "",
                 "| teacher | ce | kd | dkd | dkd − ce [95 %] | dkd − kd [95 %] |",
                 "|---|---|---|---|---|---|")
        n = len(self.r.seeds("xv-ce-weak-s{seed}")) or None
        for tag, label in (("", "teacher"), ("-weak", "teacher-weak")):
            g = {loss: self.r.seeds(f"xv-{loss}{tag}-s{{seed}}")[:n] for loss in ("ce", "kd", "dkd")}
            pc, pk = paired(g["dkd"], g["ce"]), paired(g["dkd"], g["kd"])
            self.add(f"| {label} | {fmt_ms([r['eer'] for r in g['ce']])} | "
                     f"{fmt_ms([r['eer'] for r in g['kd']])} | {fmt_ms([r['eer'] for r in g['dkd']])} | "
                     f"{fmt_paired(pc)} ({verdict(pc, 'dkd', 'ce')}) | "
                     f"{fmt_paired(pk)} ({verdict(pk, 'dkd', 'kd')}) |")
        t4 = paired(self.r.seeds("xv-dkd-b8t4-s{seed}"), self.r.seeds("xv-dkd-s{seed}"))
        self.add("", claim("Temperature on the grid: dkd beta 8, T 4 − dkd T 1 (section 1)",
                           t4, "T 4", "T 1"), "")

    # ---- 6. costs -------------------------------------------------------------------------

    def section6(self) -> None:
        s = self.settings
        self.add("## 6. What it costs", "")
        m, dump = self.r.get("costs"), self.r.get(f"dump-E{s['views']}")
        cached, online = self.r.get("xv-dkd-s0"), self.r.get("xv-dkd-online-s0")
        if not (m and dump and cached and online):
            self.add("Not run yet (needs `costs`, `dump-E{}`, `xv-dkd-s0`, "
                     "`xv-dkd-online-s0`).".format(s["views"]), "")
            return
        c = m["measured"]
        rows, epochs = dump["rows"], cached["meta"]["epochs"]
        resumed = [r["name"] for r in (dump, cached, online) if r["resumed"]]
        if resumed:
            self.add(f"**{', '.join(resumed)} resumed after a kill: the times below count only "
                     "its last attempt. Delete its result.json (and working folder) and rerun "
                     "to time it whole.**", "")
        self.add(f"Measured here: one dump (k = {s['topk']}, E = {s['views']}, {rows} rows) "
                 f"{dump['wall_s']:.0f} s; one cached x-vector dkd student ({epochs} epochs) "
                 f"{cached['wall_s']:.0f} s; one online one {online['wall_s']:.0f} s. Teacher "
                 "training is the same for both and left out.", "",
                 "| N students | dump + N cached (s) | N online (s) | ratio |", "|---|---|---|---|")
        for n in (1, 3, 10):
            a, b = dump["wall_s"] + n * cached["wall_s"], n * online["wall_s"]
            self.add(f"| {n} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
        # paper-sized teacher: replace our teacher's forward by the measured paper forward
        extra = c["paper_forward_s_per_crop"] - c["teacher_forward_s_per_crop"]
        p_dump = dump["wall_s"] + rows * extra
        p_online = online["wall_s"] + epochs * rows * extra
        tiny = " (here a tiny WavLM: `--quick`)" if c["settings"]["paper_opt"] else ""
        self.add("", f"Projected to the paper's teacher: WavLM Large + ECAPA{tiny} "
                 f"({c['paper_params_m']:.1f}M parameters, random weights) takes "
                 f"{1000 * c['paper_forward_s_per_crop']:.1f} ms per {s['crop_seconds']:g}-s "
                 f"crop forward, our teacher {1000 * c['teacher_forward_s_per_crop']:.1f} ms and a "
                 f"student training step {1000 * c['student_step_s_per_crop']:.1f} ms per crop "
                 f"(measured side by side, batch {c['settings']['batch']}, "
                 f"{c['settings']['threads']} threads): paper teacher / student step = "
                 f"{c['paper_over_student']:.1f}. Dump and online student get "
                 "(paper - ours) x the crops their teacher sees added.", "",
                 "| N students | dump + N cached (s) | N online (s) | ratio |", "|---|---|---|---|")
        for n in (1, 3, 10):
            a, b = p_dump + n * cached["wall_s"], n * p_online
            self.add(f"| {n} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
        ratio = (p_dump + 3 * cached["wall_s"]) / p_online
        self.summary.update(
            dump_plus_3_over_one_online_paper_ratio=round(ratio, 3),
            dump_plus_3_over_one_online_ratio=round(
                (dump["wall_s"] + 3 * cached["wall_s"]) / online["wall_s"], 3),
            paper_teacher_forward_over_student_step=round(c["paper_over_student"], 2))
        self.add("", f"- Headline: a dump plus three cached students cost {ratio:.2f}x one "
                 f"online-KD student at the paper's teacher/student cost ratio: the claim "
                 f"(< 0.5) {'holds' if ratio < 0.5 else '**does not hold**'}.", "")


def write_report(runs: list[Run], layout: Layout, settings: dict[str, Any],
                 path: Path) -> dict[str, Any]:
    """Write the report (and plots) from the kept results; -> the JSON summary."""
    rep = Report(runs, layout, settings, path)
    rep.header()
    for section in (rep.section1, rep.section2, rep.section3, rep.section4, rep.section5,
                    rep.section6):
        section()
    write_atomic(path, rep.lines, rep.summary)
    return rep.summary
