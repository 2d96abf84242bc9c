"""The distributed train and evaluation steps as tf.functions, built from a task.

The task writes one replica's forward/backward pass and metric updates
(trainer/tasks/base.py); here they are compiled (XLA when `jit_compile`) and
run on every replica through the strategy. A custom step rather than
`Model.fit`: the gradients are all-reduced together with the loss and the
stop flag in one collective, then unscaled and clipped to the global norm,
so every worker sees the same global values and takes the same decisions.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from trainer.tasks.base import Metrics, Task
from trainer.training import precision
from trainer.training.averaging import WeightAverages


def resolve_jit_compile(setting: str) -> bool:
    """`auto` compiles with XLA on GPUs only: on CPUs it measured slower (BENCHMARKS.md)."""
    if setting == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    return setting == "true"


@dataclasses.dataclass(frozen=True)
class StepFunctions:
    """`run(...)`: the tf.function the loop calls; `traced`: the compiled step inside it, whose
    tracing count is the number of compilations (one per bucket length)."""

    run: tf.types.experimental.PolymorphicFunction
    traced: tf.types.experimental.PolymorphicFunction

    def compilations(self) -> int:
        return self.traced.experimental_get_tracing_count()


def build_train_step(
    task: Task,
    model: tf_keras.Model,
    optimizer: tf_keras.optimizers.Optimizer,
    metrics: Metrics,
    strategy: tf.distribute.Strategy,
    global_batch_size: int,
    clip_norm: float,
    jit_compile: bool,
    averages: WeightAverages | None = None,
) -> StepFunctions:
    """`run(iterator, num_steps, seq_length, stop_requested)` runs `num_steps` steps of batches padded to
    `seq_length` (None: any length, as streamed batches come; XLA then compiles once per length). It returns
    the offset of the first step whose loss or gradients were not finite (-1: none) and whether any worker
    asked to stop.
    With `averages`, each step also moves the weight averages."""
    loss_scaled = precision.is_loss_scaled(optimizer)
    scale_loss = precision.loss_scaler(optimizer)

    @tf.function(jit_compile=jit_compile)
    def forward_backward(features, labels, weights):
        return task.train_step(model, features, labels, weights, global_batch_size, scale_loss)

    def step_fn(features, labels, weights, seq_length, stop_requested):
        features = {key: tf.ensure_shape(value, [None, seq_length]) for key, value in features.items()}
        loss, outputs, per_example_loss, gradients = forward_backward(features, labels, weights)
        # The loss and the stop flag ride along with the gradients: one collective.
        reduced = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [*gradients, loss, stop_requested * tf.ones([])]
        )
        gradients, global_loss, stops = reduced[:-2], reduced[-2], reduced[-1]
        if loss_scaled:
            gradients = optimizer.get_unscaled_gradients(gradients)
        gradients, global_norm = tf.clip_by_global_norm(gradients, clip_norm)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables), skip_gradients_aggregation=True)
        if averages is not None:
            averages.update()
        task.update_metrics(metrics, labels, outputs, per_example_loss, weights)
        diverged = ~tf.math.is_finite(global_loss)
        if not loss_scaled:  # Under loss scaling, overflowing gradients are skipped by design.
            diverged |= ~tf.math.is_finite(global_norm)
        return diverged, stops > 0

    @tf.function
    def run(iterator, num_steps, seq_length: int | None, stop_requested):
        first_diverged, stop = tf.constant(-1), tf.constant(False)
        for i in tf.range(num_steps):
            features, labels, weights = next(iterator)
            outputs = strategy.run(step_fn, args=(features, labels, weights, seq_length, stop_requested))
            diverged, stop = (strategy.experimental_local_results(value)[0] for value in outputs)
            first_diverged = tf.where((first_diverged < 0) & diverged, i, first_diverged)
        return first_diverged, stop

    return StepFunctions(run=run, traced=forward_backward)


def build_eval_step(
    task: Task, model: tf_keras.Model, metrics: Metrics, strategy: tf.distribute.Strategy, jit_compile: bool
) -> StepFunctions:
    """`run(batch)` adds one distributed batch (features, labels, weights) to `metrics`; for a task that
    collects predictions it returns the batch's (labels, outputs, weights), gathered from every replica."""

    @tf.function(jit_compile=jit_compile)
    def outputs_fn(features):
        return model(features, training=False)

    def step_fn(features, labels, weights):
        outputs = task.validation_step(outputs_fn, features, labels, weights, metrics)
        return labels, outputs, weights

    @tf.function
    def run(inputs):
        per_replica = strategy.run(step_fn, args=inputs)
        if task.collects_predictions:
            return [strategy.gather(value, axis=0) for value in per_replica]
        return None

    return StepFunctions(run=run, traced=outputs_fn)
