"""Which update a parameter gets: plain (full-size) Adam, a matrix projection, or a Tucker projection.

The rules follow ``coap_torch/utils/params.py`` (``setup_params``) and the rank computation in
``coap_torch/optimizer/adamw.py`` (``AdamW.step``) of `bytedance/coap` at commit
``deabc3a671f63f9a8b49066c925d9df6b260089e`` (arXiv 2412.00071), with two deliberate differences:

* a 4-D tensor is projected only when ``rank_ratio_conv`` is given (the official code builds a Tucker projector for
  every 4-D tensor above the size threshold and crashes later if no ratio was set);
* a matrix whose rank would not shrink (``rank >= min(m, n)``) is routed to plain Adam for any rank source (the
  official code checks this only for an explicit ``rank``).

The rules are shared by the optimizers and :func:`coap_optim.param_groups`, so both always agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from coap_optim.projection import Side, choose_side
from coap_optim.tucker import tucker_ranks

__all__ = ["Route", "RouteKind", "low_rank_shape", "matrix_rank", "route_for_shape"]

RouteKind = Literal["plain", "matrix", "tucker"]


@dataclass(frozen=True)
class Route:
    """How one parameter is updated.

    Args:
        kind (`str`): ``"plain"`` (full-size moments), ``"matrix"`` (2-D projection) or ``"tucker"`` (4-D projection).
        side (`str`, *optional*): For ``"matrix"``: ``"right"`` (``P`` is `(r, n)`) or ``"left"`` (``P`` is `(m, r)`).
        rank (`int`): For ``"matrix"``: the projection rank ``r``.
        modes (`tuple[int, ...]`): For ``"tucker"``: the projected modes (``(0,)`` or ``(0, 1)``).
        ranks (`tuple[int, ...]`): For ``"tucker"``: the rank of each projected mode.
        reason (`str`): For ``"plain"`` routes of tensors that asked for a projection: why none is used.
    """

    kind: RouteKind
    side: Side | None = None
    rank: int = 0
    modes: tuple[int, ...] = ()
    ranks: tuple[int, ...] = ()
    reason: str = ""

    @property
    def matrix_side(self) -> Side:
        """``side`` of a ``"matrix"`` route; `ValueError` for a route without one."""
        if self.side is None:
            raise ValueError(f"a {self.kind!r} route has no projection side")
        return self.side


PLAIN = Route("plain")


def matrix_rank(shape: Sequence[int], rank: int | None, rank_ratio: float | None) -> int | None:
    """The projection rank of an `(m, n)` matrix, as the official code computes it.

    ``rank_ratio`` has priority: ``r = max(min(m, n) // rank_ratio, 1)``; otherwise ``r = rank``.

    Args:
        shape (`Sequence[int]`): ``(m, n)``.
        rank (`int`, *optional*): Explicit rank.
        rank_ratio (`float`, *optional*): Compression ratio of the smaller dimension.

    Returns:
        `int` or `None`: The rank, or `None` when neither source is given. It may be ``>= min(m, n)``; the caller
        then uses plain Adam.
    """
    if rank_ratio is not None:
        return max(int(min(shape) // rank_ratio), 1)
    return rank


def route_for_shape(
    shape: Sequence[int],
    *,
    project: bool,
    rank: int | None,
    rank_ratio: float | None,
    rank_ratio_conv: float | None,
    min_conv_numel: int,
    side: str = "auto",
) -> Route:
    """Route a tensor of the given shape.

    * 2-D with a rank (``rank`` or ``rank_ratio``): matrix projection, unless ``rank >= min(m, n)`` (plain Adam);
    * 4-D with ``rank_ratio_conv`` and more than ``min_conv_numel`` elements: Tucker projection of modes 0 (and 1),
      unless no mode would shrink;
    * everything else (1-D, 3-D, small or unconfigured tensors, groups with ``project=False``): plain Adam.

    Args:
        shape (`Sequence[int]`): The parameter's shape.
        project (`bool`): The group's ``project`` flag; `False` routes everything to plain Adam.
        rank (`int`, *optional*): Matrix rank.
        rank_ratio (`float`, *optional*): Matrix compression ratio (has priority over ``rank``).
        rank_ratio_conv (`float`, *optional*): Tucker compression ratio for 4-D tensors.
        min_conv_numel (`int`): 4-D tensors with at most this many elements stay plain (official: ``32*32*3*3``).
        side (`str`, *optional*, defaults to ``"auto"``): Side of matrix projections: ``"auto"`` (the official rule,
            right when ``m >= n``), ``"right"`` or ``"left"`` for every matrix.

    Returns:
        `Route`: The route.
    """
    shape = tuple(int(s) for s in shape)
    if not project:
        return PLAIN
    if len(shape) == 2:
        r = matrix_rank(shape, rank, rank_ratio)
        if r is None:
            return PLAIN
        if r >= min(shape):
            return Route("plain", reason=f"rank {r} >= min{shape} = {min(shape)}")
        return Route("matrix", side=choose_side(shape) if side == "auto" else side, rank=r)  # type: ignore[arg-type]
    if len(shape) == 4 and rank_ratio_conv is not None and math.prod(shape) > min_conv_numel:
        modes, ranks = tucker_ranks(torch.Size(shape), rank_ratio_conv)
        if all(r >= shape[m] for m, r in zip(modes, ranks)):
            return Route("plain", reason=f"Tucker ranks {tuple(ranks)} do not shrink modes {tuple(modes)} of {shape}")
        return Route("tucker", modes=tuple(int(m) for m in modes), ranks=tuple(int(r) for r in ranks))
    return PLAIN


def low_rank_shape(shape: Sequence[int], route: Route) -> tuple[int, ...]:
    """Shape of the projected gradient (and of the low-rank moments) of a tensor on a projected route.

    Args:
        shape (`Sequence[int]`): The full shape, `(m, n)` or `(c_out, c_in, kh, kw)`.
        route (`Route`): A ``"matrix"`` or ``"tucker"`` route.

    Returns:
        `tuple[int, ...]`: `(m, r)` (right), `(r, n)` (left), or the Tucker core shape (modes replaced by ranks).
    """
    shape = tuple(int(s) for s in shape)
    if route.kind == "matrix":
        m, n = shape
        return (m, route.rank) if route.side == "right" else (route.rank, n)
    if route.kind == "tucker":
        core = list(shape)
        for mode, r in zip(route.modes, route.ranks):
            core[mode] = r
        return tuple(core)
    return shape
