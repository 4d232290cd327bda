"""Evaluating many models of an experiment in one pass over the test audio.

Each model's result keeps the EERs of the same ``N_BOOT`` speaker-bootstrap replicates
(replicate b resamples the same test speakers for every model), so any two models' EERs
can be compared paired from their result files alone.
"""

from __future__ import annotations

from typing import Any

from experiments.runs import Layout

N_BOOT = 1000  # speaker-bootstrap replicates kept per model (paired comparisons use them)
BOOT_SEED = 0  # one seed for every model: replicate b resamples the same speakers for all


def evaluate_models_of(layout: Layout, names: list[str], data: Any) -> dict[str, dict[str, Any]]:
    """Evaluate the ``model.pt`` of each run in one pass over the test audio; -> name ->
    EER, minDCF (p=0.05, 0.01), the 95 % speaker-bootstrap interval and the replicates
    (``n_boot``: how many were drawn; replicates without a target or a non-target trial are
    dropped, the same ones for every model of one trial list).
    ``data``: the :class:`speaker.io.paths.DataPaths` whose test set and trials are scored."""
    import numpy as np

    from speaker.evaluation.evaluate import evaluate_models
    from speaker.evaluation.metrics import bootstrap_eers
    from speaker.io.audio import AudioReader
    from speaker.models.checkpoint import load_checkpoint

    manifest, trial_list = data.test_set()
    models = {n: load_checkpoint(layout.work(n) / "model.pt").model for n in names}
    results = evaluate_models(models, manifest, trial_list, AudioReader(manifest[0].sample_rate))
    out = {}
    for name, r in results.items():
        boot = bootstrap_eers(r.scores, r.labels, *r.speakers, n_boot=N_BOOT, seed=BOOT_SEED)
        lo, hi = np.quantile(boot, [0.025, 0.975]) if boot.size else (float("nan"),) * 2
        out[name] = {**r.summary(), "eer_ci95": [float(lo), float(hi)],
                     "eer_boot": [round(float(e), 6) for e in boot], "n_boot": N_BOOT,
                     "trials": int(r.labels.size), "target_trials": int(r.labels.sum()),
                     "test_speakers": int(len(set(r.speakers[0]) | set(r.speakers[1])))}
    return out
