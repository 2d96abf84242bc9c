"""The export's length-sorted chunks: texts of several lengths in several chunks, each chunk cut to its own
rounded length, give the outputs of one call on the whole padded batch, in the original order."""

import random

import numpy as np
import tensorflow as tf

from configs import smoke
from trainer import experiment
from trainer.serving import export as export_lib
from trainer.tasks.registry import build_task

from conftest import make_review

SEQ_LENGTH = 128


def test_chunks_cut_to_their_lengths_give_the_outputs_of_one_call(vocab_path):
    config = smoke.get_config()
    config.model.vocab_path = vocab_path
    config.model.bert.max_position_embeddings = SEQ_LENGTH
    config.data.seq_length = SEQ_LENGTH
    task = build_task(experiment.parse(config))
    task.prepare_labels(None, ("0", "1"), None)
    model = task.build_model()
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
