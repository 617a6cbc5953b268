"""Archive-scale batch prediction on Ray Data (``fracsight batch``; the ``scale`` extra, docs/scale.md).

A manifest of paths is split into blocks by Ray Data; a pool of actors, each holding one
:class:`~fracsight.inference.Predictor`, reads, decodes and predicts them; the driver commits the
rows to Parquet parts and a CSV with the columns of ``fracsight predict --csv`` (plus ``path``).
Re-running the same command skips the files already in the output. Nothing here is imported by
the library core, and ``ray`` only inside :func:`~fracsight.scale.job.run_batch`.
"""

from __future__ import annotations

from fracsight._lazy import lazy_attributes

__all__ = ["BatchOutput", "collect_batch_inputs", "output_columns"]

# lazily, so that `fracsight --help` (which registers scale.cli) does not load the inference stack
__getattr__ = lazy_attributes(
    __name__,
    {
        "collect_batch_inputs": "fracsight.scale.inputs",
        "BatchOutput": "fracsight.scale.output",
        "output_columns": "fracsight.scale.output",
    },
)
