"""Embedding-table quantization: ``quant_embedding`` (abs_max, log, product quantization).

* ``quant_embedding``: the pass over a Program's lookup tables and the entry point.
* ``config``: :class:`EmbeddingConfig`, both PaddleSlim config shapes, validated.
* ``numerics``: the numpy-only quantizers (abs_max, log, product-quantization k-means).
"""

__all__ = []
