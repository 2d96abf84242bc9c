"""Inverted dropout with masks from a counter-based random generator."""

import tensorflow as tf
import tf_keras

# Random words per element: 16 bits set the drop probability to within 2**-16.
_LEVELS = 2**16


class Dropout(tf_keras.layers.Layer):
    """Drops inputs with probability `rate` in training and scales the rest to keep the mean.

    The mask comes from the stateless Philox generator, which fills a tensor
    several times faster on CPUs than the stateful one behind tf.nn.dropout,
    and each element takes 16 random bits rather than a 32-bit float; a
    stateful op draws only each call's two seed words, so masks still differ
    from call to call, layer to layer and replica to replica, and follow the
    global seed. The probability is rate rounded to a multiple of 2**-16, and
    the scale 1 / (1 - that), so the expected output equals the input exactly.
    """

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self._threshold = round(rate * _LEVELS)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training or not self._threshold:
            return inputs
        seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
        size = tf.size(inputs)
        words = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
        levels = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
        keep = tf.reshape(levels >= self._threshold, tf.shape(inputs))
        scale = tf.cast(_LEVELS / (_LEVELS - self._threshold), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))
