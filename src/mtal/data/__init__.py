"""Datasets, the label pool, joint transforms and the active-learning datamodule.

Importing ``mtal.data`` stays light (numpy only): dataset modules are imported when a
dataset is first created or listed, and ``ActiveDataModule`` (torch, lightning) and the
transforms (albumentations) are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mtal.data.base import DATASETS, DatasetLayoutError, MultiTaskDataset
from mtal.data.pool import LabelPool

if TYPE_CHECKING:
    from mtal.data.datamodule import ActiveDataModule
    from mtal.data.transforms import DenseTransform, to_tensors

__all__ = [
    "DATASETS",
    "DATASET_MODULES",
    "ActiveDataModule",
    "DatasetLayoutError",
    "DenseTransform",
    "LabelPool",
    "MultiTaskDataset",
    "available_datasets",
    "create_dataset",
    "registry_import",
    "to_tensors",
]

#: modules whose import registers datasets in ``DATASETS``
DATASET_MODULES: tuple[str, ...] = (
    "mtal.data.synthetic",
    "mtal.data.nyud",
    "mtal.data.pascal_context",
    "mtal.data.nuimages",
    "mtal.data.a9",
    "mtal.data.mtan",
)

_LAZY = {
    "ActiveDataModule": "mtal.data.datamodule",
    "DenseTransform": "mtal.data.transforms",
    "to_tensors": "mtal.data.transforms",
}


def registry_import() -> list[str]:
    """Import every dataset module so its datasets register; returns the modules
    imported. A module that does not exist in this installation is skipped; one that
    exists but fails to import raises its error."""
    imported = []
    for name in DATASET_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        imported.append(name)
    return imported


def available_datasets() -> list[str]:
    """Names of all registered datasets (after importing the dataset modules)."""
    registry_import()
    return DATASETS.names()


def create_dataset(name: str, **kwargs: Any) -> MultiTaskDataset:
    """Build the dataset registered as ``name`` (e.g. ``"synthetic"``) with ``kwargs``;
    an unknown name raises ``UnknownNameError`` listing the known datasets."""
    if name not in DATASETS:
        registry_import()
    return DATASETS.create(name, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtal.data' has no attribute {name!r}")
