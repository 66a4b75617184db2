"""Task registry: ``create_task("semseg", num_classes=21, **options)``.

Built-in tasks are registered as lazy factories, so ``import mtal.tasks`` stays light
(torch is imported when the first task is built). Other modules may add tasks with
``@TASKS.register("name")`` on a :class:`~mtal.tasks.base.Task` subclass.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mtal.registry import Registry
from mtal.tasks.base import Task

TASKS: Registry[Task] = Registry("task")

#: name → (module, class) of the built-in tasks
BUILTIN_TASKS: dict[str, tuple[str, str]] = {
    "semseg": ("mtal.tasks.semseg", "SemsegTask"),
    "parts": ("mtal.tasks.parts", "PartsTask"),
    "depth": ("mtal.tasks.depth", "DepthTask"),
    "normals": ("mtal.tasks.normals", "NormalsTask"),
    "edge": ("mtal.tasks.edge", "EdgeTask"),
    "saliency": ("mtal.tasks.saliency", "SaliencyTask"),
    "boxes": ("mtal.tasks.boxes", "BoxesTask"),
}


def task_class(name: str) -> type[Task]:
    """The Task subclass registered as ``name`` (imports its module on first use)."""
    entry = TASKS.get(name)
    if isinstance(entry, type):
        return entry
    return entry.task_class()  # type: ignore[attr-defined]


def _lazy_factory(module: str, cls: str) -> Callable[..., Task]:
    """A factory that imports ``module`` and builds ``cls`` only when called."""

    def load() -> type[Task]:
        return getattr(importlib.import_module(module), cls)

    def factory(**kwargs: Any) -> Task:
        return load()(**kwargs)

    factory.task_class = load  # type: ignore[attr-defined]
    factory.__qualname__ = factory.__name__ = f"create_{cls}"
    factory.__doc__ = f"Build {module}.{cls}."
    return factory


for _name, (_module, _cls) in BUILTIN_TASKS.items():
    TASKS.register(_name)(_lazy_factory(_module, _cls))


def create_task(name: str, num_classes: int | None = None, **options: Any) -> Task:
    """Build the task ``name``; ``num_classes`` is required by categorical tasks.

    Unknown names raise :class:`mtal.registry.UnknownNameError` listing the known tasks;
    unknown options raise ``TypeError`` listing the task's options.
    """
    return TASKS.create(name, num_classes=num_classes, **options)


__all__ = ["BUILTIN_TASKS", "TASKS", "Task", "create_task", "task_class"]
