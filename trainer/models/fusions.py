"""The encoder's elementwise chains: one XLA kernel each in training, fusable plain ops in inference.

Training. On CPUs TensorFlow runs the matmuls fast (oneDNN) but executes the
elementwise work between them op by op: an exact GELU is about a dozen ops,
a masked softmax with dropout or a dropout + residual + LayerNorm as many, and
each op is one more pass over a [tokens, width] tensor, in the forward and the
backward pass. Compiling the whole step with XLA fuses them but trades the
oneDNN matmuls for slower ones (BENCHMARKS.md). The `*_dropout` kernels and
`gelu` here take the best of both: each chain is one XLA-compiled function,
its gradient is compiled as well, and the matmuls around it stay with
TensorFlow. Inside a step that is XLA-compiled as a whole they are inlined.
Inputs and outputs are in the compute dtype; erf, softmax and the LayerNorm
statistics run in float32 inside the kernel. Dropout takes a seed pair drawn
outside (`dropout_seed`), so masks differ from call to call and follow the
global seed.

Inference needs no gradient and no dropout, and there oneDNN does better than
XLA: `inference_gelu` and `inference_softmax` stay in the compute dtype, where
the graph optimizer fuses the GELU into the matmul before it and oneDNN
computes both in float32 internally, rounding only the result. The inference
path uses no XLA at all, so exported models load in any TensorFlow runtime
(TF Serving runs XLA only when asked to).
"""

import tensorflow as tf


def dropout_seed() -> tf.Tensor:
    """A fresh seed pair for one dropout mask, from the stateful global generator."""
    return tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)


def _dropout(x: tf.Tensor, seed: tf.Tensor, rate: float) -> tf.Tensor:
    if not rate:
        return x
    # Threefry, named: on XLA:CPU it vectorizes within the fused loop, where Philox
    # measured 3x slower and "auto_select" 100x slower.
    keep = tf.random.stateless_uniform(tf.shape(x), seed, alg="threefry") >= rate
    return tf.where(keep, x * tf.cast(1.0 / (1.0 - rate), x.dtype), tf.zeros_like(x))


def _key_padding_bias(mask: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """[batch, keys] mask -> [batch, 1, 1, keys]: 0 for tokens, the dtype's minimum for padding."""
    return tf.where(mask[:, tf.newaxis, tf.newaxis, :] == 0, dtype.min, tf.zeros([], dtype))


def add_layer_norm(residual: tf.Tensor, update: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float):
    """LayerNorm(residual + update) over the last axis in float32; returns the residual's dtype."""
    summed = tf.cast(residual, tf.float32) + tf.cast(update, tf.float32)
    mean, variance = tf.nn.moments(summed, axes=[-1], keepdims=True)
    normalized = (summed - mean) * tf.math.rsqrt(variance + epsilon)
    return tf.cast(normalized * gamma + beta, residual.dtype)


def _recomputing_kernel(forward):
    """`forward` as an XLA kernel whose gradient is a second XLA kernel that recomputes it.

    Left to autodiff, a compiled function hands its gradient every float32
    intermediate it made: at seq_length 512 that doubled the memory of a
    float32 step. Here the gradient keeps only the kernel's inputs and, in one
    fused pass, recomputes the cheap element-wise forward and differentiates
    it (dropout masks come back from the same seed).

    `forward(*differentiable, *constants, **static)`: tensors it is
    differentiated by, tensors it is not (masks, seeds), Python values.
    """
    # The kernels branch only on Python values: AutoGraph's source rewrite would change nothing.
    compiled = tf.function(forward, jit_compile=True, autograph=False)

    @tf.function(jit_compile=True, autograph=False)
    def gradient(differentiable, constants, upstream, **static):
        with tf.GradientTape() as tape:
            tape.watch(differentiable)
            output = forward(*differentiable, *constants, **static)
        return tape.gradient(output, differentiable, output_gradients=upstream)

    @tf.autograph.experimental.do_not_convert
    def call(differentiable: tuple, constants: tuple = (), **static) -> tf.Tensor:
        @tf.custom_gradient
        def kernel(*inputs):
            return compiled(*inputs, *constants, **static), lambda upstream: gradient(
                inputs, constants, upstream, **static
            )

        return kernel(*differentiable)

    return call


def _gelu(x: tf.Tensor, approximate: bool) -> tf.Tensor:
    return tf.cast(tf.nn.gelu(tf.cast(x, tf.float32), approximate=approximate), x.dtype)


def _dropout_add_layer_norm(residual, update, gamma, beta, seed, rate: float, epsilon: float) -> tf.Tensor:
    return add_layer_norm(residual, _dropout(tf.cast(update, tf.float32), seed, rate), gamma, beta, epsilon)


_gelu_kernel = _recomputing_kernel(_gelu)
_dropout_add_layer_norm_kernel = _recomputing_kernel(_dropout_add_layer_norm)


def gelu(x: tf.Tensor, approximate: bool) -> tf.Tensor:
    """GELU, exact (erf) or the tanh approximation, computed in float32."""
    return _gelu_kernel((x,), approximate=approximate)


@tf.function(jit_compile=True, autograph=False)
def _softmax_and_dropout(scores, mask, seed, rate: float) -> tuple[tf.Tensor, tf.Tensor]:
    weights = tf.nn.softmax(tf.cast(scores, tf.float32) + _key_padding_bias(mask, tf.float32), axis=-1)
    return tf.cast(_dropout(weights, seed, rate), scores.dtype), tf.cast(weights, scores.dtype)


@tf.function(jit_compile=True, autograph=False)
def _softmax_and_dropout_gradient(dropped, weights, upstream, rate: float) -> tf.Tensor:
    # Kept entries are exactly the nonzero ones of `dropped` (where weights > 0; elsewhere
    # the weight zeroes the gradient anyway), so the mask need not be stored or redrawn.
    weights = tf.cast(weights, tf.float32)
    upstream = tf.cast(upstream, tf.float32) / (1.0 - rate)
    d_weights = tf.where(dropped != 0, upstream, tf.zeros_like(upstream)) if rate else upstream
    d_scores = weights * (d_weights - tf.reduce_sum(weights * d_weights, axis=-1, keepdims=True))
    return tf.cast(d_scores, dropped.dtype)


@tf.autograph.experimental.do_not_convert
def masked_softmax_dropout(scores: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, rate: float) -> tf.Tensor:
    """Attention weights from scores [batch, heads, queries, keys]; keys with mask [batch, keys] == 0 get none.

    Its gradient keeps the weights before dropout in the compute dtype, as the
    attention's other activations are kept, instead of float32 intermediates;
    recomputing the softmax and its dropout mask instead measured 10% slower
    at seq_length 512.
    """

    @tf.custom_gradient
    def kernel(scores):
        dropped, weights = _softmax_and_dropout(scores, mask, seed, rate)
        return dropped, lambda upstream: _softmax_and_dropout_gradient(dropped, weights, upstream, rate)

    return kernel(scores)


def dropout_add_layer_norm(
    residual: tf.Tensor,
    update: tf.Tensor,
    gamma: tf.Tensor,
    beta: tf.Tensor,
    seed: tf.Tensor,
    rate: float,
    epsilon: float,
) -> tf.Tensor:
    """LayerNorm(residual + dropout(update)) over the last axis, in the residual's dtype."""
    return _dropout_add_layer_norm_kernel((residual, update, gamma, beta), (seed,), rate=rate, epsilon=epsilon)


def inference_gelu(x: tf.Tensor, approximate: bool) -> tf.Tensor:
    """GELU in the compute dtype, for the graph optimizer to fuse into the matmul that produced `x`.

    Where it is not fused (eager calls, other devices), a bfloat16 GELU is computed in
    bfloat16: off by up to a bfloat16 unit of the result or, in the negative tail where
    1 + erf(x) cancels, of x.
    """
    return tf.nn.gelu(x, approximate=approximate)


def inference_softmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Attention weights in the compute dtype (oneDNN's softmax accumulates in float32; on CPUs without
    bfloat16 arithmetic TensorFlow's own kernel rounds its sum to bfloat16, a few units of 2**-8)."""
    return tf.nn.softmax(scores + _key_padding_bias(mask, scores.dtype), axis=-1)
