"""make results (experiments.results, .runs, .scheduler, .report): the run machinery (what is redone, the scheduler's order and
failures; stale results of an older design), the speaker subsets,
and (slow) the whole --quick experiment: report, JSON line, a rerun that redoes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.paths import SCRIPTS
from experiments.runs import Layout, Run, todo, write_json
from experiments.scheduler import Scheduler
from experiments.speaker_subset import subset
from speaker.io.manifest import Manifest, Utterance


def _result(layout: Layout, name: str, **extra) -> None:
    write_json(layout.result_path(name), {"name": name, **extra})


def test_todo_skips_finished_runs_and_redoes_a_producer_whose_output_is_gone(tmp_path: Path):
    layout = Layout(tmp_path / "out", tmp_path / "results")
    runs = [Run("t", "teacher", []), Run("d", "dump", [], ("t",)),
            Run("s1", "student", [], ("d",)), Run("s2", "student", [], ("d",)),
            Run("x", "student", [], ("d",), missing="no such flag")]
    assert [r.name for r in todo(runs, layout)] == ["t", "d", "s1", "s2"]
    for name in ("t", "d", "s1"):
        _result(layout, name)
    # s2 needs the cache, which is gone (another machine): the dump and its teacher rerun
    assert [r.name for r in todo(runs, layout)] == ["t", "d", "s2"]
    (layout.work("d") / "logits.zarr").mkdir(parents=True)
    assert [r.name for r in todo(runs, layout)] == ["s2"]
    _result(layout, "s2")
    assert todo(runs, layout) == []  # nothing needs the missing teacher checkpoint now


def _touch_cmd(path: Path, code: int = 0) -> list[str]:
    return ["-c", f"import pathlib, sys; pathlib.Path({str(path)!r}).write_text('x'); "
                  f"sys.exit({code})"]


def test_scheduler_runs_dependencies_first_and_stops_what_depends_on_a_failure(tmp_path: Path):
    layout = Layout(tmp_path / "out", tmp_path / "results")
    order: list[str] = []
    evaluated: list[int] = []

    def finish(run: Run, wall: float, cpu: float) -> None:
        order.append(run.name)
        assert wall >= 0 and cpu >= 0

    def product(name: str, kind: str) -> Path:
        return layout.product(Run(name, kind, []))

    runs = [Run("a", "measure", _touch_cmd(tmp_path / "a")),
            Run("b", "student", _touch_cmd(tmp_path / "b"), ("a",)),
            Run("c", "student", _touch_cmd(tmp_path / "c", code=3), ("a",)),
            Run("d", "student", _touch_cmd(tmp_path / "d"), ("c",)),
            Run("e", "measure", _touch_cmd(tmp_path / "e"), ("b",))]
    sched = Scheduler(layout, 2, finish, lambda: evaluated.append(len(order)), lambda a: a)
    failed = sched.run_all(runs)
    assert sorted(failed) == ["c", "d"]
    assert order[0] == "a" and set(order) == {"a", "b", "e"} and order.index("b") < order.index("e")
    assert not (tmp_path / "d").exists()  # never started
    assert evaluated  # the lanes fell idle at least once
    log = json.loads((layout.work("b") / "run.json").read_text())
    assert log["command"][0] == "python" and product("b", "student").name == "model.pt"


def test_students_planned_on_a_lane_run_there_in_order_beside_the_other_lane(tmp_path: Path):
    layout = Layout(tmp_path / "out", tmp_path / "results", runs="students")
    started: list[str] = []

    def sleep_then_touch(name: str, seconds: float) -> list[str]:
        return ["-c", f"import pathlib, time; time.sleep({seconds}); "
                      f"pathlib.Path({str(tmp_path / name)!r}).write_text('x')"]

    runs = [Run("long", "student", sleep_then_touch("long", 1.5), lane=0),
            Run("after-long", "student", sleep_then_touch("after-long", 0), lane=0),
            Run("short1", "student", sleep_then_touch("short1", 0), lane=1),
            Run("short2", "student", sleep_then_touch("short2", 0), lane=1)]
    sched = Scheduler(layout, 2, lambda run, wall, cpu: started.append(run.name))
    assert sched.run_all(runs) == []
    # lane 1 runs both short students while lane 0's first run is still going
    assert started.index("short2") < started.index("long") < started.index("after-long")
    assert (layout.work("long") / "log.txt").exists()


def test_a_resumed_student_records_the_epochs_its_checkpoint_already_held(tmp_path: Path):
    from speaker.models import build
    from speaker.models.checkpoint import save_checkpoint

    layout = Layout(tmp_path / "out", tmp_path / "results")
    fresh, killed = Run("fresh", "student", _touch_cmd(tmp_path / "f")), \
        Run("killed", "student", _touch_cmd(tmp_path / "k"))
    checkpoint = layout.product(killed)
    checkpoint.parent.mkdir(parents=True)
    save_checkpoint(checkpoint, arch="xvector", arch_kwargs={"channels": 8, "embed_dim": 8},
                    model=build("xvector", channels=8, embed_dim=8), head=None, label_map={},
                    config={}, state={"epoch": 3})
    sched = Scheduler(layout, 2, lambda run, wall, cpu: None, lambda: None, lambda a: a)
    assert sched.run_all([fresh, killed]) == []
    started = {n: json.loads((layout.work(n) / "run.json").read_text()) for n in ("fresh", "killed")}
    assert started["killed"]["command"][-1] == "--resume"
    assert started["killed"]["epochs_done_at_start"] == 3
    assert started["fresh"]["epochs_done_at_start"] == 0 and "--resume" not in started["fresh"]["command"]


def test_a_model_result_of_other_replicates_is_stale_and_its_model_evaluated_again(
        tmp_path: Path):
    layout = Layout(tmp_path / "out", tmp_path / "results", n_boot=1000)
    _result(layout, "old", kind="student", eer_boot=[0.1] * 200)  # an older design's
    _result(layout, "new", kind="student", eer_boot=[0.1] * 1000, n_boot=1000)
    _result(layout, "d", kind="dump")  # no evaluation: always valid
    assert layout.result("old") is None and layout.result("old", stale=True) is not None
    assert layout.result("new") is not None and layout.result("d") is not None
    runs = [Run("old", "student", []), Run("new", "student", []), Run("d", "dump", [])]
    assert [r.name for r in todo(runs, layout)] == ["old"]
    assert Layout(tmp_path / "out", tmp_path / "results").result("old") is not None


SUSPENDED_CHILD = """
import time
from experiments.scheduler import SuspendClock
clock = SuspendClock(tick=0.05, gap=0.3)
t0, m0 = clock.now(), time.monotonic()
print("ready", flush=True)
time.sleep(2.5)
print(clock.now() - t0, time.monotonic() - m0, flush=True)
"""


def test_suspend_clock_leaves_out_the_time_the_process_was_stopped():
    import signal
    import time

    child = subprocess.Popen([sys.executable, "-c", SUSPENDED_CHILD],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    child.send_signal(signal.SIGSTOP)
    time.sleep(1.2)
    child.send_signal(signal.SIGCONT)
    clock_s, monotonic_s = map(float, child.stdout.readline().split())
    child.wait(timeout=30)
    assert monotonic_s >= 2.5  # the sleep counted the stopped time
    assert monotonic_s - clock_s == pytest.approx(1.2, abs=0.35)


def _manifest(speakers: int, utts: int) -> Manifest:
    return Manifest([Utterance(id=f"s{s:02d}/v/{u:05d}.wav", speaker=f"s{s:02d}",
                               path=Path(f"/x/{s}/{u}.wav"), num_samples=16000,
                               sample_rate=16000)
                     for s in range(speakers) for u in range(utts)])


def test_a_session_record_keeps_its_time_so_far_when_the_session_is_killed(tmp_path: Path):
    from experiments.results.experiment import SessionRecord

    killed = SessionRecord(tmp_path)
    killed.update(61.04)  # the heartbeat's last write; then SIGKILL: no final update
    SessionRecord(tmp_path).update(5.0)
    sessions = json.loads((tmp_path / "sessions.json").read_text())
    assert [s["wall_s"] for s in sessions] == [61.0, 5.0]
    assert all(s["started"] <= s["ended"] for s in sessions)


def test_speaker_subsets_keep_the_same_number_of_utterances():
    m = _manifest(20, 8)
    subsets = {share: subset(m, share, 0.25, seed=0) for share in (0.25, 0.5, 1.0)}
    assert {share: len(set(s.speakers)) for share, s in subsets.items()} == {
        0.25: 5, 0.5: 10, 1.0: 20}
    assert {len(s) for s in subsets.values()} == {40}
    full = {u.id for u in m}
    assert all({u.id for u in s} <= full for s in subsets.values())
    # each kept speaker keeps its first utterances by id
    assert sorted(u.id for u in subsets[1.0] if u.speaker == "s03") == [
        "s03/v/00000.wav", "s03/v/00001.wav"]


@pytest.mark.slow
def test_quick_experiment_writes_the_report_and_the_json_line_and_resumes(tmp_path: Path):
    cmd = [sys.executable, str(SCRIPTS / "results.py"), "--quick", "--out",
           str(tmp_path / "out"), "--results", str(tmp_path / "results"), "--report",
           str(tmp_path / "RESULTS.md")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    for key in ("cached_minus_online_fresh_eer", "online_epoch_over_cached_epoch",
                "dump_plus_3_over_3_online_measured",
                "projected_dump_plus_3_over_3_online_wavlm_large"):
        assert isinstance(summary[key], float), key
    report = (tmp_path / "RESULTS.md").read_text()
    for heading in ("## 1. Losses and controls", "## 2. Cached against online", "## 3. Training",
                    "## 4. Views per utterance", "## 5. Teacher confidence", "## 6. What it"):
        assert heading in report
    assert "--quick` smoke run" in report and "not run |" not in report.split("## 2.")[1]
    assert (tmp_path / "results" / "plots" / "speakers.png").stat().st_size > 0
    kept = sorted(p.parent.name for p in (tmp_path / "results" / "runs").glob("*/result.json"))
    assert {"xv-dkd-online-s0", "xv-dkd-half-fresh-x3-s0", "costs"} <= set(kept)

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    sessions = json.loads((tmp_path / "results" / "sessions.json").read_text())
    assert len(sessions) == 2 and sessions[0]["wall_s"] > sessions[1]["wall_s"] > 0
    assert " start " not in again.stderr  # every run was finished: nothing is redone
    assert json.loads(again.stdout.strip().splitlines()[-1])["cached_minus_online_fresh_eer"] \
        == summary["cached_minus_online_fresh_eer"]
