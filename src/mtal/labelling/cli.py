"""``mtal label import --run RUN --request ID --from DIR|FILE [--partial]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mtal.data.base import DatasetLayoutError
from mtal.io import StateFileError
from mtal.labelling.validate import LabelImportError


def main(argv: Sequence[str] | None = None) -> int:
    """Import the labels of one request; prints what was imported, or why not (exit 1)."""
    parser = argparse.ArgumentParser(prog="mtal label", description="labels from people")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import the delivered labels of one request")
    imp.add_argument("--run", required=True, help="run folder holding requests/<ID>.json")
    imp.add_argument("--request", required=True, help="request id (printed by loop/acquire)")
    imp.add_argument(
        "--from",
        dest="source",
        required=True,
        help="folder in the dataset's layout, or a delivery list (.json/.csv: image_id,task,path)",
    )
    imp.add_argument(
        "--partial",
        action="store_true",
        help="import what was delivered; the missing pairs stay unlabelled (recorded)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    from mtal.labelling.importer import import_labels

    try:
        result = import_labels(args.run, args.request, args.source, partial=args.partial)
    except (LabelImportError, StateFileError, DatasetLayoutError, FileNotFoundError) as err:
        print(f"[mtal] label import: {err}", file=sys.stderr)
        return 1
    print(
        f"[mtal] imported {len(result.imported)} labels of request {result.request_id} into "
        f"{result.pool_path}"
        + (f"; {len(result.missing)} missing (recorded, left unlabelled)" if result.missing else "")
    )
    return 0
