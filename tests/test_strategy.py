"""Strategy helpers that need no cluster: TF_CONFIG from flags, shares on one worker, lr scaling, the
gradient all-reduce's wire dtype."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from configs import smoke
from trainer import strategy as strategy_lib
from trainer.data.sources import load_splits
from trainer.errors import UserError
from trainer.training import steps

from conftest import build_trainer, read_scalars


def test_worker_hosts_and_task_index_build_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy_lib.set_tf_config("10.0.0.1:2222, 10.0.0.2:2222", 1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    with pytest.raises(UserError, match=r"--task_index=2 is not an index into --worker_hosts \(2 hosts\)"):
        strategy_lib.set_tf_config("10.0.0.1:2222,10.0.0.2:2222", 2)


def test_one_worker_computes_every_share_itself():
    strategy = strategy_lib.create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2 and strategy_lib.num_workers(strategy) == 1
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        return np.arange(start, stop, dtype=np.int32)

    np.testing.assert_array_equal(strategy_lib.compute_in_shares(strategy, 7, compute), np.arange(7))
    assert calls == [(0, 7)]


@pytest.mark.parametrize("scaling, factor", [("none", 1), ("linear", 2)])
def test_learning_rate_scaling_with_the_replicas_is_a_config_choice(tmp_path, vocab_path, caplog, scaling, factor):
    config = smoke.get_config()
    config.model.vocab_path = vocab_path
    config.distribute.lr_scaling = scaling
    strategy = strategy_lib.create_strategy("mirrored")
    caplog.set_level("INFO", logger="absl")  # tf.saved_model.save elsewhere raises absl to WARNING.
    trainer = build_trainer(config, strategy, tmp_path, train_size=800)
    schedule = trainer.optimizer.get_config()["learning_rate"]["config"]
    assert schedule["peak"] == pytest.approx(config.train.learning_rate * factor)
    assert f"(distribute.lr_scaling={scaling})" in caplog.text


def test_worker_ids_count_the_chief_first_as_vertex_ai_names_it():
    """Vertex AI's TF_CONFIG has a "chief" job beside "worker": worker 0 must not share the chief's id,
    or two workers would compute one share of the token counts and nobody the last."""
    with_chief = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"]}
    cases = [(with_chief, "chief", 0, 0), (with_chief, "worker", 0, 1), (with_chief, "worker", 1, 2)]
    cases += [({"worker": ["w0:1", "w1:1"]}, "worker", 1, 1)]
    for spec, task_type, task_id, expected in cases:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(spec), task_type=task_type, task_id=task_id
        )
        strategy = types.SimpleNamespace(cluster_resolver=resolver)
        assert strategy_lib.worker_id(strategy) == expected, (spec, task_type, task_id)
        assert strategy_lib.num_workers(strategy) == len(spec.get("chief", [])) + len(spec["worker"])


def test_gradients_all_reduced_in_bfloat16_are_the_sum_of_the_rounded_values():
    strategy = strategy_lib.create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    # float32 holds 1 + 2^-10 exactly; bfloat16's 8 bits of mantissa round it to 1.
    fine = 1 + 2**-10
    options = tf.distribute.experimental.CommunicationOptions()

    def reduced(wire_dtype):
        def replica_fn():
            dense = tf.fill([3], fine)
            sparse = tf.IndexedSlices(tf.fill([1, 2], fine), tf.constant([1]), tf.constant([4, 2]))
            context = tf.distribute.get_replica_context()
            return steps.all_reduce_gradients(context, [dense, sparse], wire_dtype, options)

        return strategy.experimental_local_results(strategy.run(replica_fn))[0]

    for wire_dtype, expected in ((tf.float32, 2 * fine), (tf.bfloat16, 2.0)):
        dense, sparse = reduced(wire_dtype)
        assert dense.dtype == sparse.dtype == tf.float32
        np.testing.assert_array_equal(dense.numpy(), [expected] * 3)
        np.testing.assert_array_equal(tf.convert_to_tensor(sparse).numpy(), [[0, 0], [expected] * 2, [0, 0], [0, 0]])


def test_an_embedding_gradient_is_made_dense_only_when_that_sends_fewer_rows():
    table = tf.Variable(tf.zeros([10, 2]))
    dense = tf.ones([3])
    sparse = tf.IndexedSlices(tf.ones([4, 2]), tf.constant([1, 1, 7, 0]), tf.constant([10, 2]))
    variables = [tf.Variable(tf.zeros([3])), table]
    for rows, made_dense in ((None, False), (8, False), (10, False), (11, True)):
        _, table_gradient = steps.densify_when_smaller([dense, sparse], variables, rows)
        assert isinstance(table_gradient, tf.Tensor) == made_dense, rows
        np.testing.assert_array_equal(tf.convert_to_tensor(table_gradient), tf.convert_to_tensor(sparse))
    np.testing.assert_array_equal(tf.convert_to_tensor(sparse).numpy()[1], [2, 2])


@pytest.mark.slow
def test_a_bfloat16_all_reduce_keeps_the_float32_loss_trajectory(tmp_path, vocab_path, imdb_dir):
    """The stated tolerance: over 30 steps, every logged loss within 0.02 of the float32 all-reduce's."""
    losses = {}
    for wire_dtype in ("float32", "bfloat16"):
        config = smoke.get_config()
        config.model.vocab_path = vocab_path
        config.model.bert.dropout_rate = config.model.bert.attention_dropout_rate = config.model.head_dropout_rate = 0
        config.data.path = str(imdb_dir)
        config.train.steps = 30
        config.train.log_every_steps = 1
        config.distribute.allreduce_dtype = wire_dtype
        tf_keras.utils.set_random_seed(config.seed)  # The same initial weights, as trainer.main seeds them.
        strategy = strategy_lib.create_strategy("mirrored")
        trainer = build_trainer(config, strategy, tmp_path / wire_dtype, train_size=128)
        trainer.train(load_splits(config.data, config.seed).train, None)
        losses[wire_dtype] = read_scalars(tmp_path / wire_dtype / "train")["loss"]
    assert sorted(losses["float32"]) == sorted(losses["bfloat16"]) == list(range(1, 31))
    gaps = [abs(losses["float32"][step] - losses["bfloat16"][step]) for step in range(1, 31)]
    assert max(gaps) <= 0.02, gaps
    assert max(gaps) > 0, "the bfloat16 wire changed nothing: was it used?"
    # Both learn: the last steps' loss is below the first steps'.
    for trajectory in losses.values():
        assert np.mean([trajectory[s] for s in range(26, 31)]) < np.mean([trajectory[s] for s in range(1, 6)])
