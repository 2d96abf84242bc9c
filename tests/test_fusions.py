"""The XLA-compiled elementwise kernels against the plain TensorFlow ops they replace."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from trainer.models import fusions
from trainer.training import precision


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_gelu_and_its_gradient_match_tensorflow(approximate, dtype):
    x = tf.cast(tf.linspace(-6.0, 6.0, 1001), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fused = fusions.gelu(x, approximate)
        plain = tf.cast(tf.nn.gelu(tf.cast(x, tf.float32), approximate=approximate), dtype)
    assert fused.dtype == dtype
    # XLA may round float32 differently; bfloat16 results may then differ by one unit (2**-8).
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == tf.float32 else {"atol": 1e-5, "rtol": 2**-7}
    np.testing.assert_allclose(tf.cast(fused, tf.float32), tf.cast(plain, tf.float32), **tolerance)
    np.testing.assert_allclose(
        tf.cast(tape.gradient(fused, x), tf.float32), tf.cast(tape.gradient(plain, x), tf.float32), **tolerance
    )


def test_masked_softmax_gives_padded_keys_no_weight():
    scores = tf.random.stateless_normal([2, 3, 4, 5], [0, 1])
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    weights = fusions.masked_softmax_dropout(scores, mask, fusions.dropout_seed(), 0.0).numpy()
    np.testing.assert_array_equal(fusions.inference_softmax(scores, mask)[0, ..., 3:], 0.0)
    np.testing.assert_array_equal(weights[0, ..., 3:], 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights[0, ..., :3], tf.nn.softmax(scores[0, ..., :3]), atol=1e-6)


def test_dropout_drops_at_the_rate_keeps_the_mean_and_follows_the_seed():
    scores = tf.zeros([8, 4, 64, 64])  # uniform weights of 1/64 over all keys
    mask = tf.ones([8, 64], tf.int32)
    dropped = fusions.masked_softmax_dropout(scores, mask, tf.constant([3, 4]), 0.25).numpy()
    kept = dropped != 0
    assert abs(1 - kept.mean() - 0.25) < 0.005
    np.testing.assert_allclose(dropped[kept], 1 / 64 / 0.75, rtol=1e-6)
    again = fusions.masked_softmax_dropout(scores, mask, tf.constant([3, 4]), 0.25).numpy()
    other = fusions.masked_softmax_dropout(scores, mask, tf.constant([5, 6]), 0.25).numpy()
    np.testing.assert_array_equal(dropped, again)
    assert (other != dropped).mean() > 0.2


def test_dropout_add_layer_norm_matches_keras_layer_normalization():
    residual, update = (tf.random.stateless_normal([6, 24], [seed, 0]) * 3 + 1 for seed in (1, 2))
    gamma, beta = tf.random.stateless_normal([24], [3, 0]), tf.random.stateless_normal([24], [4, 0])
    keras_norm = tf_keras.layers.LayerNormalization(epsilon=1e-12)
    keras_norm.build([None, 24])
    keras_norm.set_weights([gamma.numpy(), beta.numpy()])
    fused = fusions.dropout_add_layer_norm(residual, update, gamma, beta, fusions.dropout_seed(), 0.0, 1e-12)
    np.testing.assert_allclose(fused, keras_norm(residual + update), atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_inference_ops_compute_what_the_training_kernels_compute_without_dropout(dtype):
    scores = tf.cast(tf.random.stateless_normal([2, 3, 5, 7], [5, 0]) * 4, dtype)
    mask = tf.constant([[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    inference = tf.cast(fusions.inference_softmax(scores, mask), tf.float32)
    training = tf.cast(fusions.masked_softmax_dropout(scores, mask, [0, 0], 0.0), tf.float32)
    # bfloat16 results of float32 arithmetic may differ by one unit (2**-8) of the result. A CPU
    # without bfloat16 arithmetic (AVX2 only) has no oneDNN bfloat16 softmax: TensorFlow's fallback
    # rounds the exponentials and their running sum to bfloat16, a few units (2.2% seen on an AMD EPYC).
    if dtype == tf.float32:
        tolerance = {"atol": 1e-6, "rtol": 1e-5}
    else:
        tolerance = {"atol": 1e-5, "rtol": 2**-5 if precision.cpu_has_bfloat16() is False else 2**-7}
    np.testing.assert_allclose(inference, training, **tolerance)
    x = tf.cast(tf.linspace(-6.0, 6.0, 1001), dtype)
    for approximate in (False, True):
        inference = tf.cast(fusions.inference_gelu(x, approximate), tf.float32)
        training = tf.cast(fusions.gelu(x, approximate), tf.float32)
        # Unfused, a bfloat16 GELU is computed in bfloat16: off by up to a unit of the result,
        # or, where 1 + erf(x) cancels, of x.
        magnitude = np.abs(tf.cast(x, tf.float32)) + np.abs(training)
        bound = 1e-6 + 1e-5 * magnitude if dtype == tf.float32 else 1e-5 + 2**-7 * magnitude
        assert np.all(np.abs(inference - training) <= bound), approximate


@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_kernel_gradients_match_autodiff_of_the_same_math_in_plain_ops(rate, dtype):
    """The kernels keep less for their gradients (recomputing, or reading the mask off the output);
    their gradients must equal TensorFlow's autodiff of the same computation (XLA-compiled too:
    Threefry, the kernels' generator, has no kernel outside XLA on the CPU)."""
    seed = tf.constant([7, 8])
    scores = tf.cast(tf.random.stateless_normal([2, 3, 5, 7], [1, 1]) * 3, dtype)
    mask = tf.constant([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])
    residual, update = (tf.cast(tf.random.stateless_normal([6, 16], [s, 2]), dtype) for s in (3, 4))
    gamma, beta = tf.random.stateless_normal([16], [5, 2]), tf.random.stateless_normal([16], [6, 2])
    upstream = {
        "softmax": tf.random.stateless_normal([2, 3, 5, 7], [9, 9]),
        "norm": tf.random.stateless_normal([6, 16], [9, 8]),
    }

    def plain_softmax(scores):
        weights = tf.nn.softmax(tf.cast(scores, tf.float32) + tf.where(mask[:, None, None, :] == 0, -1e9, 0.0), -1)
        if rate:
            keep = tf.random.stateless_uniform(tf.shape(weights), seed, alg="threefry") >= rate
            weights = tf.where(keep, weights / (1 - rate), 0.0)
        return tf.cast(weights, dtype)

    def plain_norm(residual, update, gamma, beta):
        update = tf.cast(update, tf.float32)
        if rate:
            keep = tf.random.stateless_uniform(tf.shape(update), seed, alg="threefry") >= rate
            update = tf.where(keep, update / (1 - rate), 0.0)
        summed = tf.cast(residual, tf.float32) + update
        mean, variance = tf.nn.moments(summed, axes=[-1], keepdims=True)
        return tf.cast((summed - mean) * tf.math.rsqrt(variance + 1e-12) * gamma + beta, dtype)

    cases = {
        "softmax": (
            lambda s: fusions.masked_softmax_dropout(s, mask, seed, rate),
            tf.function(plain_softmax, jit_compile=True),
            [scores],
        ),
        "norm": (
            lambda *xs: fusions.dropout_add_layer_norm(*xs, seed, rate, 1e-12),
            tf.function(plain_norm, jit_compile=True),
            [residual, update, gamma, beta],
        ),
    }
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == tf.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for name, (fused, plain, inputs) in cases.items():
        gradients = []
        for function in (fused, plain):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                output = function(*inputs)
            gradients.append(tape.gradient(output, inputs, output_gradients=tf.cast(upstream[name], dtype)))
        for got, want in zip(*gradients):
            np.testing.assert_allclose(tf.cast(got, tf.float32), tf.cast(want, tf.float32), **tolerance, err_msg=name)
