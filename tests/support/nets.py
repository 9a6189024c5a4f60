"""Small legacy Programs the tests quantize, built with the public static API."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle


@dataclass
class Net:
    """A built network: programs, scope, executor and the names tests feed and fetch."""

    main: paddle.static.Program
    startup: paddle.static.Program
    test: paddle.static.Program
    scope: paddle.static.Scope
    exe: paddle.static.Executor
    loss: str
    logits: str
    params: list

    def feed(self, rng, batch=8):
        """A random batch for this net."""
        return {"x": rng.standard_normal((batch, 1, 8, 8)).astype("float32"),
                "y": rng.integers(0, 10, (batch, 1)).astype("int64")}


def _matmul_v2_trans_y(main, h, out_features):
    """``matmul_v2(h, W, trans_y=True)`` with W of shape [out, in], appended op by op."""
    block = main.global_block()
    w = paddle.static.create_parameter([out_features, h.shape[1]], "float32", name="head_w")
    out = block.create_var(name="head.out", shape=[-1, out_features], dtype="float32")
    block.append_op(type="matmul_v2", inputs={"X": [h], "Y": [w]}, outputs={"Out": [out]},
                    attrs={"trans_x": False, "trans_y": True})
    return out


def conv_net(*, minimize=True, skip_second_conv=False, seed=1, optimizer="sgd", matmul_trans_y=False) -> Net:
    """conv-relu-conv-relu-pool-fc(-matmul_v2) classifier on 1x8x8 inputs.

    Args:
        minimize: append backward and optimizer ops before returning.
        skip_second_conv: put the second conv under ``name_scope('skip_quant')``.
        seed: parameter initialisation seed.
        optimizer: "sgd" or "adam".
        matmul_trans_y: end with ``matmul_v2(h, W, trans_y=True)`` instead of ``fc``.
    """
    paddle.seed(seed)
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = seed
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [None, 1, 8, 8], "float32")
        y = paddle.static.data("y", [None, 1], "int64")
        h = paddle.static.nn.conv2d(x, 4, 3, padding=1, act="relu")
        if skip_second_conv:
            with paddle.static.name_scope("skip_quant"):
                h = paddle.static.nn.conv2d(h, 8, 3, padding=1, act="relu")
        else:
            h = paddle.static.nn.conv2d(h, 8, 3, padding=1, act="relu")
        h = paddle.nn.functional.max_pool2d(h, 2)
        h = paddle.flatten(h, 1)
        if matmul_trans_y:
            logits = _matmul_v2_trans_y(main, h, 10)
        else:
            logits = paddle.static.nn.fc(h, 10)
        loss = paddle.mean(paddle.nn.functional.cross_entropy(logits, y))
        test = main.clone(for_test=True)
        if minimize:
            opt = paddle.optimizer.Adam(0.01) if optimizer == "adam" else paddle.optimizer.SGD(0.1)
            opt.minimize(loss)
    scope = paddle.static.Scope()
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        exe.run(startup)
    params = [p.name for p in main.all_parameters()]
    return Net(main, startup, test, scope, exe, loss.name, logits.name, params)


def run(net: Net, program, feed, fetch):
    """Run ``program`` in the net's scope and return numpy outputs."""
    with paddle.static.scope_guard(net.scope):
        return net.exe.run(program, feed=feed, fetch_list=fetch)


def param_values(net: Net) -> dict[str, np.ndarray]:
    """Copies of every parameter's current value."""
    return {name: np.array(net.scope.find_var(name).get_tensor()) for name in net.params}
