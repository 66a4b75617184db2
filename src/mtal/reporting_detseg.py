"""mDSQ for reports (Hekimoglu et al., ICCVW 2023, Eq. 4):
``mDSQ = (mAP / mAP_full + mIoU / mIoU_full) / 2`` with the references taken from the
experiment's fully-trained run (``full``: mean over its seeds of the last row)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mtal.metrics.multitask import mdsq

MAP_KEY = "val/boxes/map"
MIOU_KEY = "val/semseg/miou"
MDSQ_KEY = "val/mdsq"


def add_mdsq(
    runs: Mapping[str, list[list[dict[str, float]]]], reference: str = "full"
) -> dict[str, list[list[dict[str, float]]]]:
    """Add ``val/mdsq`` to every row that has mAP and mIoU, when the ``reference`` run
    has both with positive values; otherwise return ``runs`` unchanged."""
    ref = runs.get(reference, [])
    maps = [rows[-1][MAP_KEY] for rows in ref if rows and MAP_KEY in rows[-1]]
    mious = [rows[-1][MIOU_KEY] for rows in ref if rows and MIOU_KEY in rows[-1]]
    if not maps or not mious:
        return dict(runs)
    map_full, miou_full = float(np.mean(maps)), float(np.mean(mious))
    if map_full <= 0 or miou_full <= 0:
        return dict(runs)
    out: dict[str, list[list[dict[str, float]]]] = {}
    for name, seeds in runs.items():
        out[name] = [
            [
                {**row, MDSQ_KEY: mdsq(row[MAP_KEY], row[MIOU_KEY], map_full, miou_full)}
                if MAP_KEY in row and MIOU_KEY in row
                else dict(row)
                for row in rows
            ]
            for rows in seeds
        ]
    return out
