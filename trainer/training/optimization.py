"""AdamW with linear warm-up and linear decay, as BERT fine-tuning uses."""

from absl import logging
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


class AdamW(tf_keras.optimizers.AdamW):
    """tf_keras AdamW with the decoupled weight decay done inside each variable's update.

    tf_keras decays all variables in a pass of their own before the Adam
    updates; here the decay is the first line of `update_step`, so with
    `jit_compile` a variable's whole update (decay, moments, step) is one XLA
    kernel: one pass over the variable and its slots instead of three. The
    arithmetic is the same: each variable's update reads only that variable.
    """

    # Learning-rate multipliers by variable (layer-wise decay); a variable not named here trains at 1.
    _rate_multipliers: dict[str, float] = {}

    def set_rate_multipliers(self, multipliers: list[tuple[tf.Variable, float]]) -> None:
        """Scales each given variable's whole update (decay and Adam step) by its multiplier."""
        self._rate_multipliers = {self._var_key(v): m for v, m in multipliers if m != 1.0}

    def _apply_weight_decay(self, variables):
        del variables  # Done in update_step.

    def update_step(self, gradient, variable):
        multiplier = self._rate_multipliers.get(self._var_key(variable))
        before = tf.identity(variable) if multiplier is not None else None
        if self.weight_decay and self._use_weight_decay(variable):
            learning_rate = tf.cast(self.learning_rate, variable.dtype)
            variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * learning_rate)
        super().update_step(gradient, variable)
        if before is not None:
            # Both terms of the update are proportional to the rate: scaling the change scales the rate.
            variable.assign(before + (variable - before) * multiplier)


def scaled_learning_rate(learning_rate: float, scaling: str, num_replicas: int) -> float:
    """The peak learning rate for `num_replicas` replicas under `distribute.lr_scaling` (logged either way)."""
    if scaling == "linear":
        scaled = learning_rate * num_replicas
        logging.info(
            "Peak learning rate %g x %d replicas = %g (distribute.lr_scaling=linear).",
            learning_rate,
            num_replicas,
            scaled,
        )
        return scaled
    logging.info("Peak learning rate %g for %d replicas (distribute.lr_scaling=none).", learning_rate, num_replicas)
    return learning_rate


def create_optimizer(
    learning_rate: float, total_steps: int, warmup_fraction: float, weight_decay: float
) -> tf_keras.optimizers.Optimizer:
    """AdamW on the warm-up/decay schedule. Gradient clipping is done by the train step,
    after the cross-replica all-reduce, so it sees the global gradient norm; loss scaling,
    where the precision needs it, is added by trainer/training/precision.py.
    """
    schedule = WarmupLinearDecay(learning_rate, int(total_steps * warmup_fraction), total_steps)
    optimizer = AdamW(learning_rate=schedule, weight_decay=weight_decay, epsilon=1e-6)
    # One XLA kernel per variable update instead of a dozen ops. tf_keras turns this off
    # without a GPU; on the CPU it made a MiniLM training step ~10% faster.
    optimizer.jit_compile = True
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer
