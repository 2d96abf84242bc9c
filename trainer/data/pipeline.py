"""tf.data input pipelines, built once per input pipeline through the strategy.

`dataset_fn(texts, labels, plan, tokenizer)` returns a function of the strategy's
`InputContext` for `strategy.distribute_datasets_from_function`: every worker
builds its own pipeline, which gathers and tokenizes only its replicas' slice
of each global batch in the plan. One code path serves one device, many GPUs
and many workers, and any number of workers reads a plan the same way.

Elements are (features, labels, weights): features padded to the batch's
planned length, weights 0 for the padding slots of evaluation batches.
"""

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from trainer.data.batching import BatchPlan

Tokenizer = Callable[[tf.Tensor, tf.Tensor | None], dict[str, tf.Tensor]]
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]

# Token counts for bucketing are computed in batches of this many texts.
_LENGTH_BATCH = 512


def token_lengths(texts: np.ndarray, tokenizer, text_pairs: np.ndarray | None = None) -> np.ndarray:
    """Tokens each text (or pair) occupies after truncation (with [CLS]/[SEP]), computed in parallel."""
    columns = (texts.tolist(),) if text_pairs is None else (texts.tolist(), text_pairs.tolist())
    dataset = (
        tf.data.Dataset.from_tensor_slices(columns)
        .batch(_LENGTH_BATCH)
        .map(tokenizer.lengths, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    return np.concatenate([np.zeros(0, np.int32), *dataset.as_numpy_iterator()])


def pipeline_slice(plan: BatchPlan, context: tf.distribute.InputContext) -> tuple[np.ndarray, np.ndarray]:
    """This pipeline's per-replica batches: indices [batches * local replicas, per replica] and lengths.

    Global batch b is cut into one contiguous slice per replica, in replica
    order; pipeline p serves replicas p*k .. p*k+k-1 (k local replicas), one
    slice after the other, as tf.distribute expects.
    """
    replicas = context.num_replicas_in_sync
    local = replicas // context.num_input_pipelines
    per_replica = plan.indices.shape[1] // replicas
    first = context.input_pipeline_id * local
    indices = plan.indices.reshape(len(plan), replicas, per_replica)[:, first : first + local]
    return indices.reshape(-1, per_replica), np.repeat(plan.lengths, local)


def dataset_fn(
    texts: np.ndarray,
    labels: np.ndarray,
    plan: BatchPlan,
    tokenizer: Tokenizer,
    text_pairs: np.ndarray | None = None,
    repeat: bool = False,
) -> DatasetFn:
    """Batches of `plan` from `texts` (and `text_pairs`) and encoded `labels`, tokenized in parallel on the host;
    with `repeat`, the plan's batches again and again."""

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        indices, lengths = pipeline_slice(plan, context)
        # A list, not a fixed-width numpy str array: that would pad every review to the longest.
        all_texts = tf.constant(texts.tolist())
        all_pairs = tf.constant(text_pairs.tolist()) if text_pairs is not None else None
        all_labels = tf.constant(labels)

        def load(batch_indices, length):
            present = batch_indices >= 0
            rows = tf.where(present, batch_indices, 0)
            pairs = tf.gather(all_pairs, rows) if all_pairs is not None else None
            features = tokenizer(tf.gather(all_texts, rows), pairs)
            features = {key: value[:, :length] for key, value in features.items()}
            return features, tf.gather(all_labels, rows), tf.cast(present, tf.float32)

        batches = tf.data.Dataset.from_tensor_slices((indices, lengths))
        return (
            (batches.repeat() if repeat else batches)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    return make


class HeldIterators:
    """Keeps the distributed iterators of one input object referenced for as long as it lives.

    Deleting a distributed iterator can wait up to a minute with the CPU idle,
    for tf.data's autotuning thread to wake (BENCHMARKS.md, "Evaluation passes
    that waited with the CPU idle"), so none is deleted while its run goes on.
    A run builds one per training stretch (more after a rollback), one per
    evaluated split, and one per pass over a streamed split.
    """

    def __init__(self):
        self._held: list[Iterator] = []

    def hold(self, iterator: Iterator) -> Iterator:
        self._held.append(iterator)
        return iterator
