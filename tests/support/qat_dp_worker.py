"""One rank of a data-parallel dygraph QAT run: ``python -m paddle.distributed.launch --nproc_per_node N``.

Every rank builds the same seeded SmallCNN, quantizes it with paddle_quant.QAT, wraps it in
paddle.DataParallel and trains on its contiguous slice of each global batch; then it writes its
quantizer scales and weights to ``{out}/rank{r}.npz``. With ``--ranks 1`` (no launcher) it trains
on the whole global batches: the single-process reference.
"""

import argparse
import ast
import os
import sys

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.distributed import fleet
from paddle import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import paddle_quant as quant  # noqa: E402
from support.dygraph_nets import SmallCNN, batches  # noqa: E402


def _state(model) -> dict:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--config", default="{}", help="QAT config as a Python dict literal")
    parser.add_argument("--fleet", action="store_true", help="fleet.distributed_model instead of DataParallel")
    parser.add_argument("--config-rank1", default=None, help="another config for rank 1 (to test the refusal)")
    args = parser.parse_args()
    paddle.set_device("cpu")
    distributed = int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1
    if distributed and args.fleet:
        fleet.init(is_collective=True)
    elif distributed:
        dist.init_parallel_env()
    rank, ranks = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    paddle.seed(0)
    model = SmallCNN()
    config = args.config_rank1 if rank == 1 and args.config_rank1 else args.config
    quant.QAT(ast.literal_eval(config)).quantize(model)
    trained = model
    if distributed:
        trained = fleet.distributed_model(model) if args.fleet else paddle.DataParallel(model)
    optimizer = paddle.optimizer.SGD(learning_rate=0.05, parameters=model.parameters())
    for images, labels in batches(args.steps, 8 * 2, seed=1):
        part = len(images) // ranks
        x = paddle.to_tensor(images[rank * part:(rank + 1) * part])
        y = paddle.to_tensor(labels[rank * part:(rank + 1) * part])
        loss = nn.functional.cross_entropy(trained(x), y)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    np.savez(os.path.join(args.out, f"rank{rank}.npz"), **_state(model))


if __name__ == "__main__":
    main()
