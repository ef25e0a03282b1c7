"""Restoring a frame stage by stage: stage 1 over the frame, then stage 2 (+ the 2x tail) over
stage 1's output, each tile with its own stage's context only.

A tile that runs the whole model needs the context of both stages together (the shipped 2D
network: 96 px exactly, 85 px to 1e-5); run one stage at a time, each tile needs only its
stage's reach (48 px; ``stage_halo`` in the model's ``effective_halo`` record, measured at
export by ``runtime.reach``). At tile 512 that is 616^2 computed pixels per stage and tile
instead of 752^2 (exact) or 688^2 (effective halo).

Layout (all coordinates in input pixels, array order ``YX`` or ``ZYX``): stage 2's tiles cover
the image; stage 1 computes its output over their *footprint* (the image plus stage 2's context
on every side), held in one float32 buffer in the normalised domain, so stage 2 reads exactly
what an untiled pass would have computed there, padding region included. Why this equals the
untiled pass: every tile of both stages starts on the untiled pass's pooling grid (``-halo``
modulo the size multiple, as in ``runtime.tiling``), and every kept pixel has at least its
stage's reach of context on every side. Stage 1's tiles are larger (two stage-2 tiles and their
context per axis): stage 1 has no 2x tail and needs about half of stage 2's memory per
pixel (``benchmarks/stage_memory.py``).
Numpy and onnxruntime only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .model import Stage
from .tiling import TilePlan, TileReader, plan_tiles


def stage_leads(
    reach: Sequence[int], exact: Sequence[int], multiple: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Context before each stage's tiles, per axis: at least ``reach``, and such that tiles
    start on the untiled pass's grid (``-exact`` modulo ``multiple``). Stage 2's tiles start
    at ``k * tile - lead2`` in the image; stage 1's at ``k * tile1 - lead1`` in the footprint,
    which itself starts at ``-lead2``."""
    lead2 = tuple(int(r + (e - r) % m) for r, e, m in zip(reach, exact, multiple))
    lead1 = tuple(int(_ceil_div(r, m) * m) for r, m in zip(reach, multiple))
    return lead1, lead2


@dataclass(frozen=True)
class StagedPlan:
    """The tiles of both stages of one frame.

    Attributes
    ----------
    first : TilePlan
        Stage 1's tiles, in footprint coordinates.
    second : TilePlan
        Stage 2's tiles, in image coordinates.
    origin : tuple of int
        Image coordinate of the footprint's first pixel (negative: padding).
    footprint : tuple of int
        Shape of the stage-1 output that stage 2 reads.
    """

    first: TilePlan
    second: TilePlan
    origin: tuple[int, ...]
    footprint: tuple[int, ...]

    @property
    def tiles(self) -> int:
        """Tiles of both stages."""
        return len(self.first) + len(self.second)


def plan_staged(
    shape: Sequence[int],
    tile: Sequence[int | None],
    reach: Sequence[int],
    exact: Sequence[int],
    multiple: Sequence[int],
) -> StagedPlan:
    """Plan both stages for a frame of spatial ``shape``.

    Parameters
    ----------
    shape : sequence of int
        The frame's spatial shape.
    tile : sequence of int or None
        Region each stage-2 tile restores, per axis (``None``: one tile along that axis).
    reach : sequence of int
        Context each stage needs on each side (``stage_halo``), per axis.
    exact : sequence of int
        The model's exact halo (the untiled pass starts at ``-exact``).
    multiple : sequence of int
        The model's size multiple.
    """
    lead1, lead2 = stage_leads(reach, exact, multiple)
    second = plan_tiles(shape, tile, reach, multiple, lead=lead2)
    origin = tuple(-b for b in lead2)
    footprint = tuple(
        max(t.start[a] for t in second.tiles) + second.tile_shape[a] - origin[a]
        for a in range(len(shape))
    )
    tile1 = _first_tiles(footprint, tile, second, multiple)
    first = plan_tiles(footprint, tile1, reach, multiple, lead=lead1)
    return StagedPlan(first, second, origin, footprint)


def _first_tiles(footprint, tile, second: TilePlan, multiple) -> list[int | None]:
    """Stage 1's tile per axis: at most two stage-2 tiles and their context (one stage-1 tile
    for a frame of two tiles), split evenly over the footprint so no tile is mostly padding."""
    tiles = []
    for f, t, n, m in zip(footprint, tile, second.tile_shape, multiple):
        if t is None:
            tiles.append(None)
            continue
        count = _ceil_div(f, t // m * m + n)
        tiles.append(_ceil_div(_ceil_div(f, count), m) * m)
    return tiles


def computed(plan: TilePlan) -> int:
    """Input pixels (voxels) the network runs on over all tiles of ``plan``."""
    return len(plan) * math.prod(plan.tile_shape)


def fewer_pixels(staged: StagedPlan, one_pass: TilePlan) -> bool:
    """Whether stage by stage computes fewer pixels than one pass, each stage's pixel counted
    as half of a whole-model pixel. That under-rates stage by stage in 2D, where stage 2 with
    its 2x tail costs about twice stage 1 (benchmarks/RESULTS.md, "Stage by stage"); where the
    stages' reach is close to the whole model's (the fast 3D network: 12x19x19 per stage
    against 14x23x23) the two measured alike, and one pass is kept."""
    return computed(staged.first) + computed(staged.second) < 2 * computed(one_pass)


class StagedRunner:
    """Both stages over frames of one shape, with every buffer allocated once.

    Parameters
    ----------
    stages : (Stage, Stage)
        The model's stages (``Model.stages()``).
    plan : StagedPlan
        The frame's plan.
    shape : tuple of int
        The frame's spatial shape.
    output_scale : sequence of int
        Deconvolved / input size per axis.
    batch : int
        Tiles per onnxruntime call.
    pad_mode : str
        Padding beyond the image border (``reflect`` or ``edge``).
    """

    def __init__(self, stages, plan: StagedPlan, shape, output_scale, batch: int, pad_mode: str):
        self.stage1, self.stage2 = stages
        self.plan, self.scale = plan, tuple(output_scale)
        first, second = plan.first, plan.second
        starts = [tuple(s + o for s, o in zip(t.start, plan.origin)) for t in first.tiles]
        self.reader = TileReader(shape, starts, first.tile_shape, pad_mode)  # padded, as tiling
        self.mid = np.empty(plan.footprint, np.float32)  # stage 1's output, normalised
        self.inside = tuple(slice(-o, -o + n) for o, n in zip(plan.origin, shape))
        batch1 = min(batch, len(first))
        batch2 = min(batch, len(second))
        scaled = tuple(n * f for n, f in zip(second.tile_shape, self.scale))
        self.in1 = np.empty((batch1, 1, *first.tile_shape), np.float32)
        self.out1 = np.empty_like(self.in1)
        self.in2 = np.empty((batch2, 1, *second.tile_shape), np.float32)
        self.out2 = np.empty((batch2, 1, *scaled), np.float32)

    def run(
        self, frame: np.ndarray, lo: float, hi: float, den: np.ndarray, dec: np.ndarray
    ) -> None:
        """Restore ``frame`` (float32) normalised by ``lo``/``hi`` into ``den`` and ``dec``."""
        span, low = np.float32(hi - lo), np.float32(lo)
        first, second = self.plan.first, self.plan.second
        for group in _groups(len(first), self.in1.shape[0]):
            for k, t in enumerate(group):
                tile = self.in1[k, 0]
                self.reader.read(frame, t, tile)
                tile -= lo  # the same float32 operations as normalize()
                tile /= hi - lo
            out = self.stage1.run(self.in1[: len(group)], out=self.out1[: len(group)])
            for k, t in enumerate(group):
                self.mid[first.tiles[t].inner] = out[(k, 0, *first.tiles[t].crop)]
        np.multiply(self.mid[self.inside], span, out=den)
        den += low
        for group in _groups(len(second), self.in2.shape[0]):
            for k, t in enumerate(group):
                start = second.tiles[t].start
                box = tuple(
                    slice(s - o, s - o + n)
                    for s, o, n in zip(start, self.plan.origin, second.tile_shape)
                )
                self.in2[k, 0] = self.mid[box]
            out = self.stage2.run(self.in2[: len(group)], out=self.out2[: len(group)])
            for k, t in enumerate(group):
                dest, src = second.tiles[t].scaled(self.scale)
                view = dec[dest]
                np.multiply(out[(k, 0, *src)], span, out=view)
                view += low


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _groups(count: int, size: int) -> list[range]:
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


def staged_runner(
    stages: tuple[Stage, Stage],
    shape: Sequence[int],
    tile: Sequence[int | None],
    reach: Sequence[int],
    metadata,
    batch: int = 1,
    pad_mode: str = "reflect",
) -> StagedRunner:
    """A :class:`StagedRunner` for frames of ``shape`` with the model's grid and scale."""
    shape = tuple(int(s) for s in shape)
    plan = plan_staged(shape, tile, reach, metadata.halo, metadata.size_multiple)
    return StagedRunner(stages, plan, shape, metadata.output_scale, batch, pad_mode)
