"""Post-training quantization: ``quant_post`` / ``quant_post_static`` and what they are made of.

* ``quant_post``: the entry points (PaddleSlim's signature) and the workflow they run.
* ``config``: :class:`PTQConfig`, the options of ``quant_post``, validated (no Paddle import).
* ``steps``: the plan / observer / scale steps ``quant_post`` and ``analyze`` share.
* ``calibration``: the streaming calibration loop (one batch at a time, observers updated, arrays dropped).
* ``feeds``: calibration data sources (``data_loader``, ``batch_generator``, ``sample_generator``) -> feed dicts.
* ``weight_methods``: weight scales (abs max per tensor/channel, ADMM, power of two), numpy only.
* ``bias_correction``: the bias-correction arithmetic, numpy only (the graph pass is ``passes.bias``).
* ``adaround``, ``adaround_rows``: AdaRound's per-layer optimisation and input statistics, numpy only;
  ``adaround_layers``: the layers of a model, streamed and learned one by one.

Submodules are not imported eagerly: ``config`` must stay importable without Paddle.
"""

__all__ = []
