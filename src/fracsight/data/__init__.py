"""Data sets: readers for the layouts people have, group-aware splits, and the audit.

>>> from fracsight.data import load_dataset, ensure_splits
>>> ds = ensure_splits(load_dataset(Path("my_xrays")))  # doctest: +SKIP
>>> ds.layout, ds.class_names, len(ds.split("train"))  # doctest: +SKIP
"""

from __future__ import annotations

from fracsight.data.detect import LAYOUTS, detect_layout, load_dataset
from fracsight.data.sample import (
    CLASS,
    FRACTURE,
    REGION,
    Box,
    DataMismatchError,
    Dataset,
    MissingSplitError,
    NotADataFolderError,
    Sample,
    SplitLayoutError,
)
from fracsight.data.splits import ensure_splits, group_key, group_split, split_keys, straddling_groups

__all__ = [
    "CLASS",
    "FRACTURE",
    "LAYOUTS",
    "REGION",
    "Box",
    "DataMismatchError",
    "Dataset",
    "MissingSplitError",
    "NotADataFolderError",
    "Sample",
    "SplitLayoutError",
    "detect_layout",
    "ensure_splits",
    "group_key",
    "group_split",
    "load_dataset",
    "split_keys",
    "straddling_groups",
]
