"""The tf.data pipelines: epochs, resume position, sharding across input pipelines."""

import numpy as np
import tensorflow as tf

from trainer.data import pipeline
from trainer.data.sources import Examples


def identity_tokenizer(texts: tf.Tensor) -> dict[str, tf.Tensor]:
    return {"text": texts}


def examples(count: int) -> Examples:
    return Examples(
        texts=np.array([f"review {i}" for i in range(count)], dtype=object),
        labels=np.arange(count, dtype=np.int32) % 2,
        ids=np.array([str(i) for i in range(count)], dtype=object),
    )


def context(pipelines: int = 1, pipeline_id: int = 0) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(pipelines, pipeline_id, num_replicas_in_sync=pipelines)


def batches(dataset: tf.data.Dataset, count: int) -> list[list[str]]:
    return [[t.decode() for t in features["text"].numpy()] for features, _ in dataset.take(count)]


def test_each_epoch_visits_every_full_batch_example_once_in_a_new_order():
    data = examples(50)  # 12 global batches of 4 per epoch; 2 examples left over
    seen = batches(pipeline.train_dataset_fn(data, identity_tokenizer, 4, seed=3)(context()), 24)
    first, second = sum(seen[:12], []), sum(seen[12:], [])
    assert len(set(first)) == len(first) == 48
    assert len(set(second)) == 48 and first != second


def test_labels_stay_with_their_texts():
    dataset = pipeline.train_dataset_fn(examples(50), identity_tokenizer, 4, seed=3)(context())
    for features, labels in dataset.take(5):
        numbers = [int(t.decode().split()[1]) for t in features["text"].numpy()]
        np.testing.assert_array_equal(labels.numpy(), np.array(numbers) % 2)


def test_restart_at_step_continues_the_same_sequence():
    data = examples(50)
    make = pipeline.train_dataset_fn
    uninterrupted = batches(make(data, identity_tokenizer, 4, seed=3)(context()), 30)
    for start in (5, 12, 17):
        resumed = batches(make(data, identity_tokenizer, 4, seed=3, start_step=start)(context()), 30 - start)
        assert resumed == uninterrupted[start:]


def test_input_pipelines_split_each_global_batch_without_overlap():
    data = examples(50)
    single = batches(pipeline.train_dataset_fn(data, identity_tokenizer, 4, seed=3, start_step=7)(context()), 10)
    shards = [
        batches(pipeline.train_dataset_fn(data, identity_tokenizer, 4, seed=3, start_step=7)(context(2, i)), 10)
        for i in range(2)
    ]
    for step in range(10):
        assert len(shards[0][step]) == len(shards[1][step]) == 2
        assert not set(shards[0][step]) & set(shards[1][step])
        assert set(shards[0][step]) | set(shards[1][step]) == set(single[step])


def test_eval_covers_every_example_once_in_order():
    data = examples(13)
    dataset = pipeline.eval_dataset_fn(data, identity_tokenizer, 4)(context())
    seen = batches(dataset, 100)
    assert [len(b) for b in seen] == [4, 4, 4, 1]
    assert sum(seen, []) == list(data.texts)
