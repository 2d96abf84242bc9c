"""Strategy helpers that need no cluster: TF_CONFIG from flags, shares on one worker, lr scaling."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from configs import smoke
from trainer import strategy as strategy_lib
from trainer.errors import UserError

from conftest import build_trainer


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
