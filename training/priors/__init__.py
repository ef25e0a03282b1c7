"""The shipped pretrained priors (weights only, with their model cards; see ``README.md`` here)."""

from pathlib import Path

#: The 2D prior for the ``fast`` preset's network (made by ``benchmarks/train_prior.py``)
PRIOR_2D = Path(__file__).with_name("prior2d_fast.pt")
