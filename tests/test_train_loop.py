"""The distributed loop in-process: MirroredStrategy over 2 logical CPUs."""

import random

import numpy as np
import pytest
import tensorflow as tf

from configs import smoke
from trainer import strategy as strategy_lib
from trainer.data.sources import Examples, load_splits

from conftest import build_trainer, make_review


@pytest.mark.slow
def test_eval_with_partial_final_batch_matches_a_direct_computation(tmp_path, vocab_path):
    config = smoke.get_config()
    config.model.vocab_path = vocab_path
    config.eval.batch_size = 4
    strategy = strategy_lib.create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    trainer = build_trainer(config, strategy, tmp_path)
    tokenizer = trainer.input_plan.tokenizer
    rng = random.Random(0)
    labels = np.array([i % 2 for i in range(13)], dtype=np.int32)
    # 13 examples, 2 per replica: the last step leaves one replica without data.
    data = Examples(
        texts=np.array([make_review(rng, bool(label)) for label in labels], dtype=object),
        labels=labels,
        ids=np.array([str(i) for i in range(13)], dtype=object),
    )
    # A random model scores every review alike; this head spreads them over (0, 1).
    features = tokenizer(tf.constant(data.texts.tolist()))
    raw = trainer.model.encoder(features)["pooled_output"] @ trainer.model.logit.kernel
    scale = 2.0 / float(tf.math.reduce_std(raw))
    trainer.model.logit.kernel.assign(trainer.model.logit.kernel * scale)
    trainer.model.logit.bias.assign([-scale * float(tf.reduce_mean(raw))])
    results = trainer.evaluator.evaluate(data, "validation", trainer.step)
    # The second pass reads the same iterator on: the same batches, every example once again.
    again = trainer.evaluator.evaluate(data, "validation", trainer.step)
    assert again["confusion_matrix"] == results["confusion_matrix"]
    assert again["loss"] == pytest.approx(results["loss"], rel=1e-6)

    logits = trainer.model(tokenizer(tf.constant(data.texts.tolist())), training=False)
    probabilities = tf.sigmoid(logits).numpy()
    loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels.astype(np.float32), logits=logits).numpy()
    assert results["num_examples"] == 13
    assert results["accuracy"] == pytest.approx(np.mean((probabilities > 0.5) == labels))
    # Logits spread this far amplify the rounding of batch-size-dependent matmul blocking.
    assert results["loss"] == pytest.approx(loss.mean(), rel=1e-3)
    predicted, actual = probabilities > 0.5, labels == 1
    counts = {
        "true_positives": int(np.sum(predicted & actual)),
        "false_positives": int(np.sum(predicted & ~actual)),
        "true_negatives": int(np.sum(~predicted & ~actual)),
        "false_negatives": int(np.sum(~predicted & actual)),
    }
    assert results["confusion_matrix"] == counts
    precision = counts["true_positives"] / max(counts["true_positives"] + counts["false_positives"], 1)
    recall = counts["true_positives"] / max(counts["true_positives"] + counts["false_negatives"], 1)
    assert results["precision"] == pytest.approx(precision)
    assert results["recall"] == pytest.approx(recall)
    assert results["f1"] == pytest.approx(2 * precision * recall / (precision + recall) if precision + recall else 0)
    # Exact ROC-AUC: the chance that a positive outscores a negative (ties count half). Keras'
    # estimate from 200 thresholds is close to it, and its curve runs from (0, 0) to (1, 1).
    pairs = probabilities[actual][:, None] - probabilities[~actual][None, :]
    assert results["auc"] == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0), abs=0.03)
    roc = results["roc_curve"]
    assert roc["fpr"][0] == roc["tpr"][0] == 0 and roc["fpr"][-1] == roc["tpr"][-1] == 1
    assert np.std(probabilities) > 0 and len({round(p, 2) for p in probabilities.tolist()}) > 5


@pytest.mark.slow
def test_frozen_encoder_trains_only_the_head(tmp_path, vocab_path, imdb_dir):
    config = smoke.get_config()
    config.model.vocab_path = vocab_path
    config.model.freeze_encoder = True
    config.data.path = str(imdb_dir)
    config.train.steps = 3
    strategy = strategy_lib.create_strategy("one_device")
    trainer = build_trainer(config, strategy, tmp_path, train_size=128)
    assert [v.name for v in trainer.model.trainable_variables] == [
        "classifier/logit/kernel:0",
        "classifier/logit/bias:0",
    ]
    encoder_before = [v.numpy().copy() for v in trainer.model.encoder.variables]
    head_before = trainer.model.logit.kernel.numpy().copy()
    splits = load_splits(config.data, config.seed)
    trainer.train(splits.train, None)
    assert trainer.step == 3
    for before, variable in zip(encoder_before, trainer.model.encoder.variables):
        np.testing.assert_array_equal(before, variable.numpy())
    assert not np.array_equal(head_before, trainer.model.logit.kernel.numpy())
