"""A small trained fp32 inference model (digits CNN) for post-training tests, built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

import qat_digits  # demos/, on sys.path via conftest


@dataclass(frozen=True)
class DigitsModel:
    """Saved fp32 model folder plus calibration and test splits."""

    folder: Path
    train_images: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def calibration_batches(self, batch_size=32, count=4):
        """A callable returning ``count`` feed dicts of training images (data_loader form)."""
        def loader():
            for i in range(count):
                yield {"image": self.train_images[i * batch_size:(i + 1) * batch_size]}
        return loader


def build_digits_model(folder: Path, epochs: int = 8) -> DigitsModel:
    """Train the demo's CNN in fp32 and save it with ``save_inference_model`` into ``folder``."""
    x_train, x_test, y_train, y_test = qat_digits.load_data(0)
    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        with paddle.utils.unique_name.guard():
            train, test, startup, image, label, logits, loss, acc = qat_digits.build_programs(0, lr=3e-3)
            scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(scope):
                exe.run(startup)
                rng = np.random.default_rng(0)
                for _ in range(epochs):
                    for feed in qat_digits.batches(x_train, y_train, 32, rng):
                        exe.run(train, feed=feed, fetch_list=[loss])
                qat_digits.save_model(str(folder), image, logits, exe, test)
        paddle.disable_static()
    return DigitsModel(folder, x_train, x_test, y_test)


def accuracy(model_file, params_file, images, labels, *, int8: bool) -> float:
    """Top-1 accuracy (percent) of a saved model under Paddle Inference (oneDNN, fp32 or int8)."""
    predictor = qat_digits.create_predictor(str(model_file), str(params_file), int8)
    logits = qat_digits.predict(predictor, images)
    return 100.0 * float((logits.argmax(1) == labels.ravel()).mean())
