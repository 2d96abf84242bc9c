"""The distributed train and evaluation steps as tf.functions, built from a task.

The task writes one replica's forward/backward pass and metric updates
(trainer/tasks/base.py); here they are compiled (XLA when `jit_compile`) and
run on every replica through the strategy. A custom step rather than
`Model.fit`: the loss and the stop flag are all-reduced first, the gradients
after them (optionally in bfloat16 and in packs), then unscaled and clipped
to the global norm, so every worker sees the same global values and takes the
same decisions.
"""

import dataclasses

from absl import logging
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
    allreduce_dtype: tf.DType = tf.float32,
    bytes_per_pack: int = 0,
) -> StepFunctions:
    """`run(iterator, num_steps, seq_length, stop_requested)` runs `num_steps` steps of batches padded to
    `seq_length` (None: any length, as streamed batches come; XLA then compiles once per length). It returns
    the offset of the first step whose loss or gradients were not finite (-1: none) and whether any worker
    asked to stop.
    With `averages`, each step also moves the weight averages. The gradients travel as `allreduce_dtype`
    and, with `bytes_per_pack`, in packs of about that many bytes (see `all_reduce_gradients`)."""
    loss_scaled = precision.is_loss_scaled(optimizer)
    scale_loss = precision.loss_scaler(optimizer)
    options = tf.distribute.experimental.CommunicationOptions(bytes_per_pack=bytes_per_pack)
    if allreduce_dtype != tf.float32 or bytes_per_pack:
        logging.info(
            "Gradient all-reduce: %s on the wire, %s.",
            allreduce_dtype.name,
            f"in packs of about {bytes_per_pack:,} bytes" if bytes_per_pack else "in one pack",
        )

    # The model and the task's step branch only on Python values (training, dropout rates, pooling), so
    # AutoGraph's source rewrite of every layer's call, seconds at each trace, is skipped.
    @tf.function(jit_compile=jit_compile, autograph=False)
    def forward_backward(features, labels, weights):
        return task.train_step(model, features, labels, weights, global_batch_size, scale_loss)

    def step_fn(features, labels, weights, seq_length, stop_requested):
        features = {key: tf.ensure_shape(value, [None, seq_length]) for key, value in features.items()}
        loss, outputs, per_example_loss, gradients = forward_backward(features, labels, weights)
        context = tf.distribute.get_replica_context()
        # Their own small collective, in float32 whatever the gradients' wire dtype: a pack holds one dtype.
        global_loss, stops = context.all_reduce(tf.distribute.ReduceOp.SUM, [loss, stop_requested * tf.ones([])])
        if strategy.num_replicas_in_sync > 1:
            rows = global_batch_size * seq_length if seq_length is not None else None
            gradients = densify_when_smaller(gradients, model.trainable_variables, rows)
        gradients = all_reduce_gradients(context, gradients, allreduce_dtype, options)
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


def densify_when_smaller(
    gradients: list[tf.Tensor | tf.IndexedSlices], variables: list[tf.Variable], gathered_rows: int | None
) -> list[tf.Tensor | tf.IndexedSlices]:
    """The gradients, an embedding table's made dense where that sends less.

    A table's gradient comes as IndexedSlices, one row per token, and the all-reduce gathers the rows of
    every replica. Once a step's tokens over all replicas (`gathered_rows`) outnumber the table's rows, a
    dense all-reduce of the table moves fewer bytes (BERT-base at seq 512 on 32 GPUs: 524,288 rows
    against 30,522). None (lengths vary per batch): left sparse.
    """
    if gathered_rows is None:
        return gradients
    return [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) and gathered_rows > v.shape[0] else g
        for g, v in zip(gradients, variables, strict=True)
    ]


def all_reduce_gradients(
    context: tf.distribute.ReplicaContext,
    gradients: list[tf.Tensor],
    wire_dtype: tf.DType,
    options: tf.distribute.experimental.CommunicationOptions,
) -> list[tf.Tensor]:
    """The sum of `gradients` over the replicas, sent as `wire_dtype` and cast back.

    bfloat16 halves the bytes on the wire; the sum keeps bfloat16's 8 bits of mantissa. With
    `options.bytes_per_pack`, TensorFlow's collectives send the gradients in packs, the last layers'
    first, so that under a graph that is not one XLA cluster a pack can travel while the backward pass
    of the layers below it still runs (MultiWorkerMirroredStrategy; other cross-device ops ignore it).
    """
    # tf.cast hands back a tensor already of the dtype unchanged: float32 on the wire costs nothing.
    sent = [tf.cast(g, wire_dtype) for g in gradients]
    reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, sent, options=options)
    return [tf.cast(r, g.dtype) for r, g in zip(reduced, gradients, strict=True)]


def build_eval_step(
    task: Task, model: tf_keras.Model, metrics: Metrics, strategy: tf.distribute.Strategy, jit_compile: bool
) -> StepFunctions:
    """`run(batch)` adds one distributed batch (features, labels, weights) to `metrics`; for a task that
    collects predictions it returns the batch's (labels, outputs, weights), gathered from every replica."""

    @tf.function(jit_compile=jit_compile, autograph=False)  # As forward_backward: no AutoGraph rewrite.
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
