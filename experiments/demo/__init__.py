"""``make demo``: the whole pipeline on the synthetic corpus (:mod:`.pipeline`), the page it
writes under its output folder (:mod:`.page`) and its command line (:mod:`.cli`)."""
