"""Training machinery both trainers share: the epoch loop with exact resume, LR and margin
schedules, distributed set-up."""
