"""Mixed precision: the Keras policy layers are built under, and the loss scaling float16 needs.

The only place that knows what each `train.precision` means. Layers take
their compute dtype from the global policy when they are built, so the policy
is set before any model is; float16 gradients of an unscaled loss would
underflow, so under `mixed_float16` the optimizer is wrapped in a dynamic
`LossScaleOptimizer`, and the steps ask the optimizer, not the config,
whether to scale.
"""

from collections.abc import Callable

import tensorflow as tf
import tf_keras

_LOSS_SCALED = "mixed_float16"


def set_policy(precision: str) -> None:
    """Layers built from now on compute in `precision`'s dtype (variables stay float32)."""
    tf_keras.mixed_precision.set_global_policy(precision)


def wrap_optimizer(optimizer: tf_keras.optimizers.Optimizer, precision: str) -> tf_keras.optimizers.Optimizer:
    """`optimizer`, with dynamic loss scaling where the precision needs it.

    The LossScaleOptimizer skips steps whose gradients overflow and lowers the
    scale; the step counter still advances.
    """
    if precision == _LOSS_SCALED:
        return tf_keras.mixed_precision.LossScaleOptimizer(optimizer, dynamic=True)
    return optimizer


def is_loss_scaled(optimizer: tf_keras.optimizers.Optimizer) -> bool:
    return isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)


def loss_scaler(optimizer: tf_keras.optimizers.Optimizer) -> Callable[[tf.Tensor], tf.Tensor]:
    """The function a step applies to its loss before taking gradients."""
    return optimizer.get_scaled_loss if is_loss_scaled(optimizer) else tf.identity
