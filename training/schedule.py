"""How long a run trains and at what learning rate: the schedules and the time budget."""

from __future__ import annotations

import math

from .config import TrainConfig

#: Steps timed before a time budget fixes the iteration count (the first one, warm-up, excluded)
PROBE_STEPS = 6
#: Parts of the budget after which the step time is measured again (on the steps since the
#: last measurement) and the iteration count fixed again: the first steps can be slower and
#: later steps drift (benchmarks/step_drift.py; RESULTS.md, "--time-budget")
REMEASURE_AT = (0.25, 0.5, 0.75)


def lr_factor(cfg: TrainConfig, iteration: int) -> float:
    """Learning-rate multiplier at ``iteration`` (0-based)."""
    if cfg.schedule == "step":
        return 0.5 ** (iteration // cfg.lr_step)
    if cfg.schedule == "milestones":
        return 0.5 ** sum(iteration >= m for m in cfg.lr_milestones)
    progress = min(iteration / max(cfg.iterations, 1), 1.0)
    floor = cfg.lr_min_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def budget_iterations(
    budget_s: float,
    elapsed_s: float,
    done: int,
    step_s: float,
    checkpoint_s: float,
    every: int,
    cap: int,
) -> int:
    """The iteration count that ends a run within ``budget_s`` seconds.

    ``done`` iterations took ``elapsed_s``; each further one takes ``step_s``, and a checkpoint
    (with its plots) ``checkpoint_s`` every ``every`` iterations and once at the end. Never
    fewer than ``done``, never more than ``cap``.
    """
    per_step = step_s + checkpoint_s / max(every, 1)
    more = math.floor((budget_s - elapsed_s - checkpoint_s) / max(per_step, 1e-9))
    return int(min(cap, done + max(more, 0)))
