"""Accuracy analysis of a quantized model: per-layer error, sensitivity, skip lists, the HTML report.

* ``analyze``: :func:`analyze` and its result types (per-layer SQNR/cosine, the automatic skip list).
* ``sensitivity``: the metric change when one unit is left in float, on the Executor or a runtime.
* ``report``: ``report.html`` with plots and tables.
"""

__all__ = []
