"""What ``make results`` makes of its finished commands: the result file of each run (times,
the cache's statistics, the measurement) and the models' evaluations."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from experiments.evaluation import evaluate_models_of
from experiments.paths import ROOT
from experiments.results.plan import TEACHER_EMBED_DIM, Plan
from experiments.runs import Layout, Run, write_json

log = logging.getLogger("experiments")

SOFT_LABEL_ARRAYS = {"utt", "start", "seed", "label", "target_logit", "topk_index", "topk_logit",
                     "tail_lse"}


class Experiment:
    """Turns finished commands into result files (the scheduler's callbacks)."""

    def __init__(self, plan: Plan, layout: Layout, lanes: int) -> None:
        self.plan, self.layout, self.lanes = plan, layout, lanes
        self.by_name = {r.name: r for r in plan.runs}
        self.plots = layout.results / "plots"

    def resolve(self, argv: list[str]) -> list[str]:
        """Fill in C-1 (from the run's --train manifest) and the teacher's embedding size
        (from its --cache)."""
        if "--topk" in argv and argv[argv.index("--topk") + 1].startswith("{"):
            from speaker.io.paths import load_manifest

            i = argv.index("--topk") + 1
            c = len(load_manifest(Path(argv[argv.index("--train") + 1])).speakers)
            cap = re.fullmatch(r"\{min\(C-1,(\d+)\)\}", argv[i])
            k = min(c - 1, int(cap.group(1))) if cap else c - 1
            argv = [*argv[:i], str(k), *argv[i + 1:]]
        dim_opt = f"embed_dim={TEACHER_EMBED_DIM}"
        if dim_opt in argv:
            spec = self._cli_json("store", "inspect", argv[argv.index("--cache") + 1],
                                  "--json")["spec"]
            argv = [f"embed_dim={spec['embedding_dim']}" if a == dim_opt else a for a in argv]
        return argv

    def _cli_json(self, *args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout
        return json.loads(out)

    def _base(self, run: Run, wall: float, cpu: float) -> dict:
        started = json.loads((self.layout.work(run.name) / "run.json").read_text())
        return {"name": run.name, "kind": run.kind, "meta": run.meta,
                "command": started["command"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "resumed": "--resume" in started["command"],
                "epochs_done_at_start": started.get("epochs_done_at_start", 0)}

    def finish(self, run: Run, wall: float, cpu: float) -> None:
        res = self._base(run, wall, cpu)
        work = self.layout.work(run.name)
        if run.kind in ("teacher", "student"):
            if run.kind == "student":  # which teacher's cache it learnt from (see the report)
                dump = self.layout.result(run.meta["cache"]) or {}
                res["teacher_sha256"] = dump.get("teacher_sha256")
            write_json(self.layout.trained(run.name), res)  # evaluated when the lanes are idle
            return
        if run.kind == "corpus":
            res["corpus"] = json.loads((work / "data" / "toy.json").read_text())
        elif run.kind == "subset":
            from speaker.io.paths import load_manifest

            sub = load_manifest(work / "train.jsonl")
            res.update(utterances=len(sub), speakers=len(sub.speakers))
        elif run.kind == "dump":
            cache = str(work / "logits.zarr")
            self.plots.mkdir(parents=True, exist_ok=True)
            res["stats"] = self._cli_json("store", "stats", cache, "--json", "--plot",
                                          str(self.plots / f"{run.name}-stats.png"))
            info = self._cli_json("store", "inspect", cache, "--json")
            res["rows"] = info["written_rows"]
            res["k"] = info["spec"]["k"]
            res["classes"] = info["spec"]["num_classes"]
            res["teacher_sha256"] = info["spec"]["teacher"]["checkpoint_sha256"]
            res["stored_bytes"] = info["stored_bytes"]
            res["soft_label_bytes"] = sum(a["stored_bytes"] for a in info["arrays"]
                                          if a["name"] in SOFT_LABEL_ARRAYS)
        elif run.kind == "measure":
            lines = (work / "log.txt").read_text().strip().splitlines()
            res["measured"] = json.loads(lines[-1])
        write_json(self.layout.result_path(run.name), res)

    def evaluate(self) -> None:
        """Evaluate every trained, unevaluated model in one pass over the test audio."""
        import torch

        from speaker.io.paths import DataPaths

        names = [r.name for r in self.plan.runs if r.kind in ("teacher", "student")
                 and self.layout.trained(r.name).exists()
                 and self.layout.result(r.name) is None]
        if not names:
            return
        log.info("evaluating %d models: %s", len(names), ", ".join(names))
        torch.set_num_threads(self.lanes)
        evals = evaluate_models_of(self.layout, names, DataPaths(data=self.plan.root))
        for name in names:
            res = json.loads(self.layout.trained(name).read_text())
            # the epochs this attempt ran (wall_s is the last attempt's)
            epochs = (res["meta"].get("epochs") or 1) - res.get("epochs_done_at_start", 0)
            res.update(evals[name], wall_s_per_epoch=round(res["wall_s"] / max(epochs, 1), 2))
            write_json(self.layout.result_path(name), res)


class SessionRecord:
    """This invocation's entry in RESULTS/sessions.json (the measured total of ``make
    results``), rewritten as it goes so that a session killed outright (SIGKILL, a machine
    taken back) still leaves its time up to the last :meth:`update`.

    Example::

        record = SessionRecord(results)   # appends {"started", "ended", "wall_s": 0}
        record.update(125.0)              # rewrites that entry's "ended" and "wall_s"
    """

    def __init__(self, results: Path) -> None:
        self.path = results / "sessions.json"
        self.sessions = json.loads(self.path.read_text()) if self.path.exists() else []
        self.sessions.append({"started": _utc_now(), "ended": _utc_now(), "wall_s": 0.0})
        self._lock = threading.Lock()  # the heartbeat thread and the final update
        write_json(self.path, self.sessions)

    def update(self, wall: float) -> None:
        """Set this session's wall time so far (seconds, stopped time excluded)."""
        with self._lock:
            self.sessions[-1].update(ended=_utc_now(), wall_s=round(wall, 1))
            write_json(self.path, self.sessions)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
