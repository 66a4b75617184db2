"""Alternation baseline (Hekimoglu et al., ICCVW 2023, Sec. IV-B): a detection strategy
(CALD) and a segmentation strategy (EquAL on semseg) on alternate cycles."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtal.acquisition import STRATEGIES, create_strategy
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy


@STRATEGIES.register("alternation")
class Alternation(Strategy):
    """Cycle ``c`` uses ``order[c % len(order)]`` (default CALD first, then EquAL-semseg);
    ``options`` maps a strategy name to its keyword options."""

    name = "alternation"
    granularity = "image"

    def __init__(
        self,
        order: tuple[str, ...] | list[str] = ("cald", "equal-semseg"),
        options: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if len(order) < 2 or "alternation" in order:
            raise ValueError(f"alternation: order={list(order)} needs >= 2 other strategies")
        options = dict(options or {})
        self.order = tuple(order)
        self.members = {n: create_strategy(n, **dict(options.get(n, {}))) for n in self.order}
        for n, m in self.members.items():
            if m.granularity != "image":
                raise ValueError(f"alternation: {n!r} buys pairs; alternate image strategies only")

    def check_model(self, model: Any) -> None:
        for member in self.members.values():
            member.check_model(model)

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        name = self.order[int(ctx.cycle) % len(self.order)]
        sel = self.members[name].acquire(ctx, count, self.members[name].rng(ctx))
        sel.diagnostics["alternation_member"] = name
        return sel
