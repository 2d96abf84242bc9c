"""AdamW with linear warm-up and linear decay, as BERT fine-tuning uses."""

import tensorflow as tf
import tf_keras

# Normalisation scales and biases are not decayed (substrings of variable names).
NO_DECAY_NAMES = ("layer_norm", "bias")


class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `peak` over `warmup_steps`, then falls linearly to 0 at `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        super().__init__()
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(max(self.warmup_steps, 1), tf.float32)
        decay = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        rising = self.peak * step / warmup
        falling = self.peak * tf.maximum(0.0, (self.total_steps - step) / decay)
        return tf.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def create_optimizer(
    learning_rate: float, total_steps: int, warmup_fraction: float, weight_decay: float, precision: str = "float32"
) -> tf_keras.optimizers.Optimizer:
    """AdamW on the warm-up/decay schedule. Gradient clipping is done by the train step,
    after the cross-replica all-reduce, so it sees the global gradient norm.

    Under mixed_float16 it is wrapped in a dynamic LossScaleOptimizer: float16
    gradients of an unscaled loss would underflow. It skips steps whose
    gradients overflow and lowers the scale; the step counter still advances.
    """
    schedule = WarmupLinearDecay(learning_rate, int(total_steps * warmup_fraction), total_steps)
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6)
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    if precision == "mixed_float16":
        return tf_keras.mixed_precision.LossScaleOptimizer(optimizer, dynamic=True)
    return optimizer
