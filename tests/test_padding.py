"""Shorter padding computes the same: the export's length-sorted chunks, each cut to its own rounded
length, give the outputs of one call on the whole padded batch, in the original order; and training
batches cut to their length buckets give the loss and gradients of the same batches padded in full."""

import random

import numpy as np
import pytest
import tensorflow as tf

from configs import smoke
from trainer import experiment
from trainer.data.examples import Examples, object_array
from trainer.data.input_plan import InputPlan
from trainer.serving import export as export_lib
from trainer.tasks.registry import build_task

from conftest import make_review

SEQ_LENGTH = 128


def binary_task_and_model(vocab_path):
    """The tiny BERT's binary task at SEQ_LENGTH, without dropout (it would make two calls differ)."""
    config = smoke.get_config()
    config.model.vocab_path = vocab_path
    config.model.bert.max_position_embeddings = SEQ_LENGTH
    config.model.bert.dropout_rate = 0.0
    config.model.bert.attention_dropout_rate = 0.0
    config.model.head_dropout_rate = 0.0
    config.data.seq_length = SEQ_LENGTH
    task = build_task(experiment.parse(config))
    task.prepare_labels(None, ("0", "1"), None)
    return task, task.build_model()


def test_chunks_cut_to_their_lengths_give_the_outputs_of_one_call(vocab_path):
    task, model = binary_task_and_model(vocab_path)
    rng = random.Random(0)
    # Three chunks of 16 and one of 2; lengths from a few tokens to past seq_length, shuffled.
    texts = [make_review(rng, i % 2 == 0, length=rng.choice([3, 10, 40, 70, 200])) for i in range(50)]
    features = task.build_tokenizer()(tf.constant(texts))

    lengths = np.sort(features["input_mask"].numpy().sum(axis=1))
    size = export_lib.CHUNK_SIZE
    chunk_longest = [lengths[i : i + size].max() for i in range(0, len(lengths), size)]
    multiple = export_lib.LENGTH_MULTIPLE
    cut = [min(-(-int(n) // multiple) * multiple, SEQ_LENGTH) for n in chunk_longest]
    # The cut is taken (a chunk shorter than seq_length) and lengths beyond one multiple occur.
    assert len(cut) == 4 and min(cut) < SEQ_LENGTH and max(cut) > multiple and len(set(cut)) >= 2, cut

    chunked = export_lib.logits_by_length(model, features).numpy()
    whole = tf.reshape(tf.cast(model(features, training=False), tf.float32), [-1]).numpy()
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_batches_cut_to_their_bucket_lengths_train_as_the_same_batches_padded_to_seq_length(vocab_path):
    """Length buckets change what a batch is padded to, never the math: on the in-memory plan's batches of
    four bucket lengths, the loss and every gradient equal those of the same batch padded to seq_length."""
    task, model = binary_task_and_model(vocab_path)
    rng = random.Random(1)
    texts = [make_review(rng, i % 2 == 0, length=rng.choice([3, 20, 45, 90, 200])) for i in range(96)]
    examples = Examples(
        np.array(texts, dtype=object),
        object_array([i % 2 for i in range(96)]),
        np.array([f"review-{i}" for i in range(96)], dtype=object),
    )
    plan = InputPlan(tf.distribute.get_strategy(), task.build_tokenizer(), task.encode_labels, SEQ_LENGTH, 4, seed=0)
    batches = plan.training_batches(examples, 8, 0, 12, [])
    full = task.build_tokenizer()(tf.constant(texts))
    seen_lengths = set()
    for step in range(12):
        features, labels, weights = next(batches.iterator)
        length = features["input_word_ids"].shape[1]
        seen_lengths.add(length)
        # The cut drops padding only: each row is its review's tokens in full.
        rows = batches.plan.indices[step]
        expected = tf.gather(full["input_word_ids"], rows).numpy()
        np.testing.assert_array_equal(features["input_word_ids"].numpy(), expected[:, :length])
        assert not expected[:, length:].any()
        padded = {key: tf.pad(value, [[0, 0], [0, SEQ_LENGTH - length]]) for key, value in features.items()}
        results = [
            task.train_step(model, inputs, labels, weights, global_batch_size=8, scale_loss=lambda loss: loss)
            for inputs in (features, padded)
        ]
        (cut_loss, _, _, cut_gradients), (padded_loss, _, _, padded_gradients) = results
        np.testing.assert_allclose(cut_loss.numpy(), padded_loss.numpy(), rtol=1e-5, atol=1e-6)
        for variable, a, b in zip(model.trainable_variables, cut_gradients, padded_gradients):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=variable.name)
    assert len(seen_lengths) >= 3 and max(seen_lengths) <= SEQ_LENGTH, seen_lengths
