"""tf.data input pipelines, built once per input pipeline through the strategy.

Each function returns a `dataset_fn(input_context)` for
`strategy.distribute_datasets_from_function`: every worker builds its own
pipeline, reads only its shard and batches per replica, so one code path
serves one device, many GPUs and many workers.
"""

from collections.abc import Callable

import tensorflow as tf

from trainer.data.sources import DataError, Examples

Tokenizer = Callable[[tf.Tensor], dict[str, tf.Tensor]]
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches in one epoch; the last partial batch is dropped in training."""
    return num_examples // global_batch_size


def _tokenized(dataset: tf.data.Dataset, tokenizer: Tokenizer) -> tf.data.Dataset:
    """(texts, labels) batches -> (features, labels), tokenized in parallel on the host."""

    def tokenize(texts, labels):
        return tokenizer(texts), tf.cast(labels, tf.float32)

    return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def train_dataset_fn(
    examples: Examples, tokenizer: Tokenizer, global_batch_size: int, seed: int, start_step: int = 0
) -> DatasetFn:
    """Endless training batches: a seeded reshuffle every epoch, resumable at `start_step`.

    Epoch e visits the examples in a permutation fixed by (seed, e), so a run
    restarted from step s sees exactly the batches an uninterrupted run would.
    """
    num_examples = len(examples)
    per_epoch = steps_per_epoch(num_examples, global_batch_size)
    if per_epoch == 0:
        raise DataError(
            f"{num_examples} training examples do not fill one global batch of {global_batch_size} "
            "(--config.train.batch_size)."
        )
    start_epoch, step_in_epoch = divmod(start_step, per_epoch)
    kept_per_epoch = per_epoch * global_batch_size

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # A list, not a fixed-width numpy str array: that would pad every review to the longest.
        texts = tf.constant(examples.texts.tolist())
        labels = tf.constant(examples.labels)
        batch_size = context.get_per_replica_batch_size(global_batch_size)

        def epoch_order(epoch):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
            )
            return tf.data.Dataset.from_tensor_slices(order[:kept_per_epoch])

        indices = (
            tf.data.Dataset.range(start_epoch, tf.int64.max)
            .flat_map(epoch_order)
            # All pipelines share the permutation and take disjoint slices of it.
            .shard(context.num_input_pipelines, context.input_pipeline_id)
            .skip(step_in_epoch * global_batch_size // context.num_input_pipelines)
        )
        batches = indices.batch(batch_size, drop_remainder=True).map(
            lambda i: (tf.gather(texts, i), tf.gather(labels, i))
        )
        # Endless: tells tf.distribute that no replica can run out of data mid-step.
        return _tokenized(batches, tokenizer).apply(
            tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
        )

    return dataset_fn


def eval_dataset_fn(examples: Examples, tokenizer: Tokenizer, global_batch_size: int) -> DatasetFn:
    """One pass over `examples` in order, the last batch partial."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch_size = context.get_per_replica_batch_size(global_batch_size)
        dataset = tf.data.Dataset.from_tensor_slices((examples.texts.tolist(), examples.labels))
        dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id).batch(batch_size)
        return _tokenized(dataset, tokenizer)

    return dataset_fn
