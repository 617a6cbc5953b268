"""Archive-scale batch prediction on Ray Data (``fracsight batch``; the ``scale`` extra, docs/scale.md).

A manifest of paths is split into blocks by Ray Data; a pool of actors, each holding one
:class:`~fracsight.inference.Predictor`, reads, decodes and predicts them; the driver commits the
rows to Parquet parts and a CSV with the columns of ``fracsight predict --csv`` (plus ``path``).
Re-running the same command skips the files already in the output. Nothing here is imported by
the library core, and ``ray`` only inside :func:`~fracsight.scale.job.run_batch`.
"""

from fracsight.scale.inputs import collect_batch_inputs
from fracsight.scale.output import BatchOutput, output_columns

__all__ = ["BatchOutput", "collect_batch_inputs", "output_columns"]
