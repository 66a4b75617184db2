"""Acquisition strategies: score the unlabelled pool and pick what to label next.

``create_strategy(name, **kw)`` builds a registered strategy; ``STRATEGIES.names()``
lists them. Importing this package imports torch (the strategies need it).
"""

from __future__ import annotations

from typing import Any

from mtal.registry import Registry

STRATEGIES: Registry[Any] = Registry("strategy")


def create_strategy(name: str, **kwargs: Any) -> Any:
    """Build the strategy registered as ``name`` (unknown names list the known ones)."""
    return STRATEGIES.create(name, **kwargs)


# registration side effects (after STRATEGIES exists)
from mtal.acquisition import (  # noqa: E402, F401
    alternation,  # noqa: E402, F401  (builds on the others)
    cald,
    cdal,
    coreset,
    detseg_consistency,
    equal,
    ll4al,
    mtal_consistency,
    partal,
    random,
    rbal,
)
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy  # noqa: E402

__all__ = ["STRATEGIES", "AcquisitionContext", "Selection", "Strategy", "create_strategy"]
