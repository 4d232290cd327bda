"""``make results``: its plan of runs (:mod:`.plan`), what it makes of finished runs
(:mod:`.experiment`) and its command line (:mod:`.cli`); the report: :mod:`experiments.report`."""
