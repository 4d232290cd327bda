"""Tuning on the dev split (``scripts/tune.py``): every setting the recipes of the demo and
``make results`` take from ``docs/tuning.json`` (:data:`experiments.recipes.BASE`) chosen by
mean dev EER over seeds, on a small resumable grid (:mod:`.grid`) of public command lines --
``stage2_student.train`` on the demo's corpus, teacher and cache, then
``stage2_student.evaluate --split dev`` -- run by :mod:`experiments.scheduler` (:mod:`.cli`);
the choices and their tables (:mod:`.report`) go to ``OUT/tuning.json`` and ``OUT/tuning.md``
(``--publish-docs``: docs/). The test trials are never scored here."""
