"""Learning-rate schedule and decoupled weight decay."""

import numpy as np
import tensorflow as tf
import tf_keras

from trainer.training import optimization


def test_warmup_then_linear_decay():
    schedule = optimization.WarmupLinearDecay(peak=1e-3, warmup_steps=10, total_steps=110)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)


def test_no_warmup():
    schedule = optimization.WarmupLinearDecay(peak=1.0, warmup_steps=0, total_steps=4)
    np.testing.assert_allclose([float(schedule(s)) for s in range(5)], [1.0, 0.75, 0.5, 0.25, 0.0])


def test_weight_decay_skips_layer_norm_and_biases():
    layer = tf_keras.layers.Dense(3, name="dense")
    norm = tf_keras.layers.LayerNormalization(name="layer_norm", beta_initializer="ones")
    norm(layer(tf.ones([1, 2])))
    optimizer = optimization.create_optimizer(learning_rate=0.1, total_steps=10, warmup_fraction=0.0, weight_decay=0.5)
    variables = [layer.kernel, layer.bias, norm.gamma, norm.beta]
    layer.bias.assign(tf.ones([3]))
    before = [v.numpy().copy() for v in variables]
    # Zero gradients: Adam moves nothing, so any change is weight decay.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    after = [v.numpy() for v in variables]
    np.testing.assert_allclose(after[0], before[0] * (1 - 0.1 * 0.5), rtol=1e-5)
    for unchanged_before, unchanged_after in zip(before[1:], after[1:]):
        np.testing.assert_array_equal(unchanged_before, unchanged_after)


def test_fused_weight_decay_updates_exactly_as_tf_keras_adamw():
    """Decay folded into each variable's (XLA-compiled) update: the same trajectory as tf_keras'
    separate decay pass, for decayed and excluded variables alike."""
    rng = np.random.default_rng(0)
    initial = {"dense/kernel": rng.normal(size=(4, 3)), "dense/bias": rng.normal(size=(3,))}
    gradients = [{name: rng.normal(size=value.shape) for name, value in initial.items()} for _ in range(5)]

    def trajectory(optimizer):
        variables = [tf.Variable(value, dtype=tf.float32, name=name.split("/")[1]) for name, value in initial.items()]
        optimizer.exclude_from_weight_decay(var_names=list(optimization.NO_DECAY_NAMES))
        for step_gradients in gradients:
            optimizer.apply_gradients(
                [(tf.constant(g, tf.float32), v) for g, v in zip(step_gradients.values(), variables)]
            )
        return [v.numpy() for v in variables]

    fused = optimization.create_optimizer(learning_rate=0.01, total_steps=5, warmup_fraction=0.0, weight_decay=0.3)
    schedule = optimization.WarmupLinearDecay(peak=0.01, warmup_steps=0, total_steps=5)
    reference = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.3, epsilon=1e-6)
    assert fused.jit_compile
    for got, want in zip(trajectory(fused), trajectory(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
