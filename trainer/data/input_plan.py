"""Examples -> distributed datasets of planned batches: one object per run for training, evaluation and benchmarks.

It owns the input side's decisions: the bucket lengths, each example's token
count (computed once per split, each worker tokenizing its own share), the
batch plans of training and evaluation (trainer/data/batching.py) and the
per-pipeline tf.data input through the strategy (trainer/data/pipeline.py).
The training loop asks it for the batches of a range of steps; a benchmark
asks the same object which length each step was padded to.
"""

from collections.abc import Callable, Iterable, Iterator
import dataclasses
import time

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import strategy as strategy_lib
from trainer.data import batching, pipeline
from trainer.data.examples import DataError, Examples
from trainer.models.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class TrainingBatches:
    """What the training loop reads: the distributed iterator and, for planned input, the plan that says
    how many of the next steps share one padded length (streamed batches take any length)."""

    iterator: Iterator
    plan: batching.BatchPlan | None

    def next_run(self, offset: int, limit: int) -> tuple[int, int | None]:
        """(steps, padded length or None) of the next call: at most `limit` steps from plan batch `offset`."""
        if self.plan is None:
            return limit, None
        return self.plan.run_length(offset, limit), int(self.plan.lengths[offset])


@dataclasses.dataclass(frozen=True)
class EvaluationBatches:
    """A split's distributed batches, every example once, and how many there are (None: unknown)."""

    batches: Iterable
    num_batches: int | None


@dataclasses.dataclass(frozen=True)
class _EvaluationIterator:
    """A split's iterator over its evaluation plan, repeated, and the examples it reads."""

    examples: Examples
    iterator: Iterator
    num_batches: int


class InputPlan:
    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        tokenizer: Tokenizer,
        encode_labels: Callable[[np.ndarray, np.ndarray], np.ndarray],
        seq_length: int,
        num_buckets: int,
        seed: int,
        steps_per_loop: int = 1,
    ):
        self.strategy = strategy
        self.tokenizer = tokenizer
        self.encode_labels = encode_labels
        self.buckets = batching.bucket_lengths(seq_length, num_buckets)
        self.seed = seed
        self.steps_per_loop = steps_per_loop
        # Keyed by split name, kept with the examples they were computed for.
        self._token_lengths: dict[str, tuple[Examples, np.ndarray]] = {}
        self._evaluation_iterators: dict[tuple[str, int], _EvaluationIterator] = {}
        self._held_iterators = pipeline.HeldIterators()

    @staticmethod
    def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
        """Full global batches per epoch; raises DataError if the data do not fill one."""
        steps = batching.steps_per_epoch(num_examples, global_batch_size)
        if not steps:
            raise DataError(
                f"{num_examples} training examples do not fill one global batch of {global_batch_size} "
                "(--config.train.batch_size)."
            )
        return steps

    def token_lengths(self, examples: Examples, split_name: str) -> np.ndarray:
        """Tokens each example occupies (all of seq_length without buckets); computed once per split."""
        cached = self._token_lengths.get(split_name)
        if cached is not None and cached[0] is examples:
            return cached[1]
        if len(self.buckets) == 1:
            return np.full(len(examples), self.buckets[0], np.int32)
        began = time.time()
        # Each worker tokenizes its own share; all receive every length, for the same plan.
        lengths = strategy_lib.compute_in_shares(
            self.strategy,
            len(examples),
            lambda start, stop: pipeline.token_lengths(
                examples.texts[start:stop],
                self.tokenizer,
                examples.text_pairs[start:stop] if examples.text_pairs is not None else None,
            ),
        )
        counts = np.bincount(np.searchsorted(self.buckets, lengths), minlength=len(self.buckets))
        logging.info(
            "Length buckets %s hold %s examples (token counts of %d examples in %.1f s).",
            self.buckets.tolist(),
            counts.tolist(),
            len(examples),
            time.time() - began,
        )
        self._token_lengths[split_name] = examples, lengths
        return lengths

    def train_plan(
        self, token_lengths: np.ndarray, global_batch_size: int, start_step: int, end_step: int, skipped: list[int]
    ) -> batching.BatchPlan:
        """The global batches of training steps [start_step, end_step), skipped plan positions left out."""
        return batching.train_plan(
            token_lengths,
            global_batch_size,
            self.seed,
            self.buckets,
            start_step,
            end_step,
            self.steps_per_loop,
            skipped,
        )

    def eval_plan(self, examples: Examples, split_name: str, global_batch_size: int) -> batching.BatchPlan:
        """Every example of the split once, grouped by bucket; short batches padded with zero-weight slots."""
        return batching.eval_plan(self.token_lengths(examples, split_name), global_batch_size, self.buckets)

    def training_batches(
        self, examples: Examples, global_batch_size: int, start_step: int, end_step: int, skipped: list[int]
    ) -> TrainingBatches:
        """The batches of training steps [start_step, end_step) by the plan, skipped positions left out."""
        lengths = self.token_lengths(examples, "train")
        plan = self.train_plan(lengths, global_batch_size, start_step, end_step, skipped)
        return TrainingBatches(self._held_iterators.hold(iter(self.distribute(examples, plan))), plan)

    def evaluation_batches(self, examples: Examples, split_name: str, global_batch_size: int) -> EvaluationBatches:
        """One pass over the split's plan, read from an iterator that repeats the plan and outlives the pass.

        Distributed iterators are held as long as the plan lives
        (pipeline.HeldIterators), so each split reads from one. A pass left
        unfinished leaves it, and the next pass starts a new one at the plan's
        first batch.
        """
        key = (split_name, global_batch_size)
        cached = self._evaluation_iterators.get(key)
        if cached is None or cached.examples is not examples:
            plan = self.eval_plan(examples, split_name, global_batch_size)
            iterator = self._held_iterators.hold(iter(self.distribute(examples, plan, repeat=True)))
            cached = _EvaluationIterator(examples, iterator, len(plan))
            self._evaluation_iterators[key] = cached
        return EvaluationBatches(self._one_pass(key), cached.num_batches)

    def _one_pass(self, key: tuple[str, int]) -> Iterator:
        cached = self._evaluation_iterators.pop(key)
        for _ in range(cached.num_batches):
            yield next(cached.iterator)
        self._evaluation_iterators[key] = cached

    def read_error(self, examples: Examples, error: tf.errors.OpError) -> None:
        """In-memory examples were read before training: a failure of their pipeline is not a read error."""
        del examples, error

    def distribute(
        self, examples: Examples, plan: batching.BatchPlan, repeat: bool = False
    ) -> tf.distribute.DistributedDataset:
        """The batches of `plan` (over and over with `repeat`), each input pipeline tokenizing only its
        replicas' slices."""
        labels = self.encode_labels(examples.labels, examples.ids)
        make = pipeline.dataset_fn(examples.texts, labels, plan, self.tokenizer, examples.text_pairs, repeat)
        return self.strategy.distribute_datasets_from_function(make)
