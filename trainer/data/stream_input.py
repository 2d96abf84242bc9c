"""Streamed splits -> distributed datasets, built per input pipeline through the strategy.

The streamed counterpart of trainer/data/input_plan.py, with the same two
methods the loop and the evaluator call. Each input pipeline (one per worker):

  its files (sharded by file when there are at least as many files as input
  pipelines, else every file read and the records sharded) -> records, kept
  by the split's hash, cleaned, labels encoded -> training: shuffled (files
  each epoch, records in a seeded buffer) and repeated -> grouped by an
  estimate of their token count with tf.data's bucket_by_sequence_length ->
  batches tokenized in parallel and cut to the smallest bucket length that
  holds their longest text (static lengths: one compilation per bucket) ->
  optionally through the tf.data service. Prepared shards (trainer/data/prepared.py)
  skip the tokenizer: their records hold token ids and exact lengths.

Nothing is held whole and nothing is read before the first step. Resuming at
step s skips the batches consumed before it, before tokenization: the records
up to there are read again, but not tokenized, and the order is a function of
the seed alone, so the batches after a restart are those an uninterrupted run
would have seen.
"""

from collections.abc import Callable

from absl import logging
import tensorflow as tf

from trainer.data import batching, pipeline
from trainer.data.input_plan import EvaluationBatches, TrainingBatches
from trainer.data.pipeline import DatasetFn
from trainer.data.streams import Stream
from trainer.models.tokenizer import Tokenizer

# WordPiece tokens per whitespace-separated word in English text, roughly: the length estimate that
# groups records before they are tokenized.
_TOKENS_PER_WORD = 1.3


class StreamInput:
    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        tokenizer: Tokenizer,
        label_encoder: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
        seq_length: int,
        num_buckets: int,
        seed: int,
        pairs: bool = False,
        shuffle_buffer: int = 10_000,
        skip_corrupt_records: bool = False,
        service_address: str = "",
    ):
        self.strategy = strategy
        self.tokenizer = tokenizer
        self.label_encoder = label_encoder
        self.buckets = batching.bucket_lengths(seq_length, num_buckets)
        self.seed = seed
        self.pairs = pairs
        self.shuffle_buffer = shuffle_buffer
        self.skip_corrupt_records = skip_corrupt_records
        self.service_address = service_address
        self._held_iterators = pipeline.HeldIterators()

    def training_batches(
        self, stream: Stream, global_batch_size: int, start_step: int, end_step: int, skipped: list[int]
    ) -> TrainingBatches:
        """Batches from step `start_step` on; the batches of earlier steps (and of the ones skipped for a
        NaN loss) are passed over."""
        del end_step  # The stream repeats: the loop decides where it ends.
        consumed = start_step + len(skipped)
        make = self.dataset_fn(stream, global_batch_size, training=True, consumed=consumed)
        distributed = self.strategy.distribute_datasets_from_function(make)
        return TrainingBatches(self._held_iterators.hold(iter(distributed)), plan=None)

    def evaluation_batches(self, stream: Stream, split_name: str, global_batch_size: int) -> EvaluationBatches:
        """Every record of the split once; workers whose share ends first get empty batches meanwhile."""
        del split_name
        make = self.dataset_fn(stream, global_batch_size, training=False)
        distributed = self.strategy.distribute_datasets_from_function(make)
        return EvaluationBatches(self._held_iterators.hold(iter(distributed)), num_batches=None)

    def read_error(self, stream: Stream, error: tf.errors.OpError) -> str | None:
        """What a failure of the input pipeline was, naming the shard at fault; None if it was not a read."""
        message = " ".join(error.message.split())
        named = next(
            (line for line in error.message.splitlines() if ": label '" in line or ": not valid" in line), None
        )
        if named is not None:
            return (
                f"{named.strip().strip('[]')}. (--config.data.skip_corrupt_records=true skips and counts such "
                "records instead.)"
            )
        if not isinstance(error, tf.errors.DataLossError) and "IteratorGetNext" not in message:
            return None
        return f"{stream.source.flag}: {stream.failed_shard(error)}."

    def dataset_fn(self, stream: Stream, global_batch_size: int, training: bool, consumed: int = 0) -> DatasetFn:
        """The function of an InputContext that builds one input pipeline's batches."""

        def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = context.get_per_replica_batch_size(global_batch_size)
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            batches = self._grouped(self.records(stream, context, training), per_replica, training)
            if consumed:
                batches = batches.skip(consumed * local_replicas)
            batches = batches.map(self._tokenized, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            if self.service_address:
                from trainer.data import service_client as service  # grpc: only for runs that use it.

                job = service.pipeline_job_name(context, prefix=stream.name)
                batches = service.distribute(batches, self.service_address, job)
            return batches.prefetch(tf.data.AUTOTUNE)

        return make

    def records(self, stream: Stream, context: tf.distribute.InputContext, training: bool) -> tf.data.Dataset:
        """This input pipeline's records with their encoded labels, in the order batches take them."""
        num_pipelines, pipeline_id = context.num_input_pipelines, context.input_pipeline_id
        by_file = len(stream.files) >= num_pipelines
        files = tf.data.Dataset.from_tensor_slices(list(stream.files))
        if by_file and num_pipelines > 1:
            files = files.shard(num_pipelines, pipeline_id)
        own = len(stream.files[pipeline_id::num_pipelines]) if by_file else len(stream.files)
        logging.info(
            "Input pipeline %d of %d: %s split, %d of %d file(s)%s.",
            pipeline_id,
            num_pipelines,
            stream.name,
            own,
            len(stream.files),
            " (sharded by file)" if by_file else f"; every {num_pipelines}th record (fewer files than pipelines)",
        )
        if training:
            files = files.shuffle(len(stream.files), seed=self.seed, reshuffle_each_iteration=True)
        records = stream.records(files)
        if not by_file:
            records = records.shard(num_pipelines, pipeline_id)
        records = records.map(self._labelled, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if self.skip_corrupt_records:
            records = records.filter(lambda record: record["label_ok"])
        if training:
            # Shuffled within each pass over the files, then repeated: no record twice in one epoch.
            records = records.shuffle(self.shuffle_buffer, seed=self.seed, reshuffle_each_iteration=True).repeat()
        return records

    def _labelled(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        target, ok = self.label_encoder(record["label"])
        if not self.skip_corrupt_records:
            message = tf.strings.join([record["key"], ": label ", record["label"], " is not a label of this task"])
            with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
                target = tf.identity(target)
        # Texts (or, from prepared shards, token ids and lengths) travel on; the label string does not.
        kept = {name: value for name, value in record.items() if name not in ("label", "keep")}
        return {**kept, "target": target, "label_ok": ok}

    def _grouped(self, records: tf.data.Dataset, per_replica: int, training: bool) -> tf.data.Dataset:
        """Batches of records; with several buckets, records of about one length together."""
        if len(self.buckets) == 1:
            return records.batch(per_replica, drop_remainder=training)

        def estimated_tokens(record: dict[str, tf.Tensor]) -> tf.Tensor:
            if "length" in record:  # Prepared shards know their token counts.
                return record["length"]
            words = tf.size(tf.strings.split(record["text"])) + tf.size(tf.strings.split(record["text_pair"]))
            return tf.cast(tf.cast(words, tf.float32) * _TOKENS_PER_WORD, tf.int32) + 3

        # A record estimated at up to bucket b's length goes to bucket b.
        return records.bucket_by_sequence_length(
            estimated_tokens,
            bucket_boundaries=[int(length) + 1 for length in self.buckets[:-1]],
            bucket_batch_sizes=[per_replica] * len(self.buckets),
            drop_remainder=training,
        )

    def _tokenized(self, batch: dict[str, tf.Tensor]):
        if "input_word_ids" in batch:  # Prepared shards.
            features = {name: batch[name] for name in ("input_word_ids", "input_mask", "input_type_ids")}
        else:
            features = self.tokenizer(batch["text"], batch["text_pair"] if self.pairs else None)
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1))
        buckets = tf.constant(self.buckets, tf.int32)
        length = tf.gather(buckets, tf.minimum(tf.searchsorted(buckets, [longest])[0], len(self.buckets) - 1))
        features = {key: value[:, :length] for key, value in features.items()}
        return features, batch["target"], tf.ones(tf.shape(batch["target"])[:1], tf.float32)
