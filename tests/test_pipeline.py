"""Batch plans and the tf.data pipelines built from them: epochs, buckets, resume, sharding."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import batching, pipeline
from trainer.data.sources import Examples


def identity_tokenizer(texts: tf.Tensor, pairs: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    # Called as the pipeline calls a real tokenizer: tokenizer(texts, pairs), pairs None for single texts.
    assert pairs is None
    # Rank 2, like real features, so the pipeline's cut to the batch length applies.
    return {"text": texts[:, tf.newaxis]}


def examples(count: int) -> Examples:
    return Examples(
        texts=np.array([f"review {i}" for i in range(count)], dtype=object),
        labels=np.arange(count, dtype=np.int32) % 2,
        ids=np.array([str(i) for i in range(count)], dtype=object),
    )


def context(pipelines: int = 1, pipeline_id: int = 0, replicas: int | None = None) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(pipelines, pipeline_id, num_replicas_in_sync=replicas or pipelines)


def consumed(dataset: tf.data.Dataset) -> list[list[int]]:
    """Example numbers in each batch (padding slots left out)."""
    return [
        [int(t.decode().split()[1]) for t, w in zip(features["text"].numpy()[:, 0], weights.numpy()) if w]
        for features, _, weights in dataset
    ]


LENGTHS = np.random.default_rng(0).integers(3, 65, size=203).astype(np.int32)
BUCKETS = batching.bucket_lengths(64, 4)


def test_bucket_lengths_are_evenly_spaced_multiples_of_8_ending_at_seq_length():
    assert batching.bucket_lengths(512, 4).tolist() == [128, 256, 384, 512]
    assert batching.bucket_lengths(100, 3).tolist() == [40, 72, 100]
    assert batching.bucket_lengths(128, 1).tolist() == [128]


@pytest.mark.parametrize("buckets", [np.array([64]), BUCKETS])
def test_each_epoch_visits_every_example_once_except_the_last_partial_batch(buckets):
    plan = batching.train_plan(LENGTHS, 8, seed=3, buckets=buckets, start_step=0, end_step=50)
    per_epoch = 203 // 8
    first, second = plan.indices[:per_epoch].ravel(), plan.indices[per_epoch : 2 * per_epoch].ravel()
    assert len(set(first)) == len(first) == per_epoch * 8
    assert len(set(second)) == per_epoch * 8 and first.tolist() != second.tolist()
    assert (plan.indices >= 0).all()


def test_buckets_are_exact_and_tight():
    plan = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=0, end_step=75, steps_per_run=3)
    # Exact: no batch is cut below the longest review in it.
    longest = LENGTHS[plan.indices].max(axis=1)
    assert (longest <= plan.lengths).all()
    # Tight: all-full-bucket batches use the smallest bucket that fits.
    assert set(plan.lengths.tolist()) == set(BUCKETS.tolist())
    assert (plan.lengths < 64).sum() > len(plan) // 2


def test_bucketed_batches_come_in_runs_of_one_length():
    plan = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=0, end_step=25, steps_per_run=3)
    changes = np.flatnonzero(np.diff(plan.lengths)) + 1
    runs = np.diff(np.concatenate([[0], changes, [len(plan)]]))
    assert runs.max() >= 2
    assert plan.run_length(0, 10) == runs[0] and plan.run_length(0, 1) == 1


def test_plans_are_deterministic_for_a_seed():
    def make(seed):
        return batching.train_plan(LENGTHS, 8, seed=seed, buckets=BUCKETS, start_step=0, end_step=40)

    assert make(3).indices.tolist() == make(3).indices.tolist()
    assert make(3).indices.tolist() != make(4).indices.tolist()


@pytest.mark.parametrize("start", [5, 25, 31])
def test_a_plan_from_any_step_continues_the_same_sequence(start):
    full = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=0, end_step=60)
    resumed = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=start, end_step=60)
    np.testing.assert_array_equal(resumed.indices, full.indices[start:])
    np.testing.assert_array_equal(resumed.lengths, full.lengths[start:])


def test_skipped_batches_are_left_out_and_later_steps_move_on():
    full = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=0, end_step=40)
    skipping = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=0, end_step=38, skipped=[4, 9])
    expected = np.delete(full.indices, [4, 9], axis=0)
    np.testing.assert_array_equal(skipping.indices, expected)
    resumed = batching.train_plan(LENGTHS, 8, seed=3, buckets=BUCKETS, start_step=6, end_step=38, skipped=[4, 9])
    np.testing.assert_array_equal(resumed.indices, expected[6:])
    assert batching.position_of_step(4, [4, 9]) == 5 and batching.position_of_step(8, [4, 9]) == 10


def test_eval_plan_covers_every_example_once_with_weighted_padding():
    plan = batching.eval_plan(LENGTHS, 16, BUCKETS)
    real = plan.indices[plan.indices >= 0]
    assert sorted(real.tolist()) == list(range(len(LENGTHS)))
    lengths = np.where(plan.indices >= 0, LENGTHS[plan.indices], 0)
    assert (lengths.max(axis=1) <= plan.lengths).all()
    assert (plan.indices < 0).sum() < 16 * len(BUCKETS)


def test_pipeline_batches_follow_the_plan_with_labels_and_lengths():
    data = examples(50)
    plan = batching.train_plan(np.full(50, 8), 4, seed=3, buckets=np.array([8]), start_step=0, end_step=20)
    dataset = pipeline.dataset_fn(data.texts, data.labels.astype(np.float32), plan, identity_tokenizer)(context())
    assert consumed(dataset) == plan.indices.tolist()
    for features, labels, weights in dataset.take(3):
        numbers = [int(t.decode().split()[1]) for t in features["text"].numpy()[:, 0]]
        np.testing.assert_array_equal(labels.numpy(), np.array(numbers) % 2)
        assert weights.numpy().tolist() == [1.0] * 4


@pytest.mark.parametrize("workers,replicas", [(2, 2), (2, 4), (3, 3)])
def test_workers_consume_disjoint_shares_of_every_global_batch(workers, replicas):
    """Each input pipeline (one per worker) reads only its replicas' slices of each global batch;
    together they consume every planned example exactly once."""
    data = examples(203)
    global_batch = 12
    plan = batching.train_plan(LENGTHS, global_batch, seed=3, buckets=BUCKETS, start_step=0, end_step=16)
    per_worker = [
        consumed(
            pipeline.dataset_fn(data.texts, data.labels.astype(np.float32), plan, identity_tokenizer)(
                context(workers, w, replicas)
            )
        )
        for w in range(workers)
    ]
    local = replicas // workers
    for step in range(len(plan)):
        shares = [sum(batches[step * local : (step + 1) * local], []) for batches in per_worker]
        assert all(len(share) == global_batch // workers for share in shares)
        assert sorted(sum(shares, [])) == sorted(plan.indices[step].tolist())
    everything = sum((sum(batches, []) for batches in per_worker), [])
    assert len(everything) == len(set(everything)) == 16 * global_batch


def test_eval_pipeline_pads_with_zero_weight_and_cuts_to_the_planned_length():
    data = examples(13)
    plan = batching.eval_plan(np.full(13, 5), 4, np.array([8, 16]))
    dataset = pipeline.dataset_fn(data.texts, data.labels.astype(np.float32), plan, identity_tokenizer)(context())
    batches = consumed(dataset)
    assert sum(batches, []) == list(range(13))
    assert [len(b) for b in batches] == [4, 4, 4, 1]


def test_token_lengths_match_the_tokenizer(vocab_path):
    from trainer.models.bert.tokenizer import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocab_path, seq_length=6)
    data = Examples(np.array(["", "great film", "good " * 40], dtype=object), np.zeros(3, np.int32), np.zeros(3))
    assert pipeline.token_lengths(data.texts, tokenizer).tolist() == [2, 4, 6]

    # The plan computes a split's lengths once, and again for other examples under the same name.
    from trainer.data.input_plan import InputPlan

    plan = InputPlan(tf.distribute.get_strategy(), tokenizer, lambda labels, ids: labels, 16, 2, 0)
    assert plan.token_lengths(data, "validation").tolist() == [2, 4, 6]
    assert plan.token_lengths(data, "validation") is plan.token_lengths(data, "validation")
    shorter = Examples(data.texts[:2], data.labels[:2], data.ids[:2])
    assert plan.token_lengths(shorter, "validation").tolist() == [2, 4]


def test_evaluation_passes_share_one_iterator_and_an_unfinished_pass_starts_the_next_afresh(monkeypatch):
    """Each pass reads every example once, in plan order, from an iterator built once per split (deleting
    one can stall for a minute); a pass left unfinished does not shift the next one."""
    from trainer.data.input_plan import InputPlan

    data = examples(13)
    plan = InputPlan(
        tf.distribute.get_strategy(), identity_tokenizer, lambda labels, ids: labels.astype(np.float32), 8, 1, 0
    )
    builds = []
    distribute = plan.distribute
    monkeypatch.setattr(plan, "distribute", lambda *args, **kwargs: builds.append(1) or distribute(*args, **kwargs))

    def one_pass(stop_after: int | None = None, split: Examples = data) -> list[list[int]]:
        batches = plan.evaluation_batches(split, "validation", 4)
        read = []
        for features, _, weights in batches.batches:
            read.append([int(t.decode().split()[1]) for t, w in zip(features["text"].numpy()[:, 0], weights) if w])
            if len(read) == stop_after:
                break
        return read

    first = one_pass()
    assert sum(first, []) == list(range(13)) and [len(b) for b in first] == [4, 4, 4, 1]
    assert one_pass() == first and len(builds) == 1
    assert one_pass(stop_after=2) == first[:2]
    assert one_pass() == first and one_pass() == first
    assert len(builds) == 2
    assert plan.evaluation_batches(data, "test", 4).num_batches == 4 and len(builds) == 3
    # Other examples under the same split name are read, not the cached iterator's.
    assert sum(one_pass(split=examples(6)), []) == list(range(6)) and len(builds) == 4


def test_distributed_iterators_are_held_after_their_last_batch():
    """None is deleted while the run goes on: deleting one can wait a minute with the CPU idle."""
    import gc
    import weakref

    from trainer.data.input_plan import InputPlan

    data = examples(13)
    plan = InputPlan(
        tf.distribute.get_strategy(), identity_tokenizer, lambda labels, ids: labels.astype(np.float32), 8, 1, 0
    )
    training = weakref.ref(plan.training_batches(data, 4, 0, 3, []).iterator)
    evaluation = plan.evaluation_batches(data, "validation", 4).batches
    unfinished = weakref.ref(plan._evaluation_iterators["validation", 4].iterator)
    next(evaluation)
    del evaluation  # A pass left unfinished drops the split's iterator.
    gc.collect()
    assert training() is not None and unfinished() is not None
