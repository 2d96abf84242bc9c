"""An exponential moving average of the trainable weights, for evaluation, selection and export.

    average <- decay * average + (1 - decay) * weight      after every step

The averages are variables of their own, created in the strategy's scope
(mirrored, updated identically on every replica) and saved in the checkpoint
beside the model, so a resumed run continues the same average. Evaluation,
the best checkpoint and the export use the averaged weights: `swapped_in`
puts them in the model for a while and the trained weights back after.
"""

from collections.abc import Iterator
import contextlib

import tensorflow as tf
import tf_keras


class WeightAverages(tf.Module):
    def __init__(self, model: tf_keras.Model, decay: float):
        super().__init__(name="weight_averages")
        self.decay = decay
        self._weights = list(model.trainable_variables)
        # Each replica updates its copy with the same values: the first replica's stands for all.
        self.averages = [
            tf.Variable(
                weight.read_value(),
                trainable=False,
                name=weight.name.split(":")[0].replace("/", "_") + "_average",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            for weight in self._weights
        ]

    def update(self) -> None:
        """One step of the average; call in the train step, after the weights were updated."""
        for average, weight in zip(self.averages, self._weights):
            average.assign(average * self.decay + tf.cast(weight, average.dtype) * (1.0 - self.decay))

    def apply(self) -> None:
        """Puts the averaged weights in the model for good (evaluating or exporting a checkpoint)."""
        for weight, average in zip(self._weights, self.averages):
            weight.assign(average)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its trained weights again after it."""
        trained = [weight.read_value() for weight in self._weights]
        self.apply()
        try:
            yield
        finally:
            for weight, value in zip(self._weights, trained):
                weight.assign(value)
