"""Model selection, weight averaging, layer-wise rates, continuous evaluation and reproducible runs."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from configs import smoke
from trainer import experiment
from trainer.config import TrainConfig
from trainer.errors import UserError
from trainer.run_dir import RunDirectory
from trainer.schema import ConfigError
from trainer.tasks import registry as task_registry
from trainer.training import optimization, profiling
from trainer.training.averaging import WeightAverages
from trainer.training.checkpointing import CheckpointError, restore_model
from trainer.training.selection import ModelSelection

from conftest import (
    PYTHON,
    REPO,
    check_ok,
    check_refused,
    read_scalars,
    run_trainer,
    serve_outputs_in_fresh_process,
    snapshot,
    subprocess_env,
    trainer_command,
)

TEXTS = ["a great and moving film", "boring awful mess", "the plot was fun"]


# ----- in process: the pieces -----


def _dense_model() -> tf_keras.Model:
    model = tf_keras.Sequential([tf_keras.layers.Dense(1)])
    model.build((None, 2))
    return model


def test_the_best_checkpoint_follows_the_metric_its_mode_and_min_delta_then_patience_stops(tmp_path):
    model = _dense_model()
    config = TrainConfig(best_metric="validation/loss", early_stopping_patience=2, min_delta=0.01)
    selection = ModelSelection(config, frozenset({"loss"}), model, tf.distribute.get_strategy(), RunDirectory(tmp_path))
    weights_at = {}
    # loss is lower-is-better (auto mode): 0.495 is not better than 0.5 by more than min_delta.
    for step, loss in [(10, 0.5), (20, 0.495), (30, 0.4), (40, 0.45), (50, 0.41)]:
        model.layers[0].kernel.assign(np.full((2, 1), float(step), np.float32))
        weights_at[step] = model.layers[0].kernel.numpy()
        assert not selection.should_stop
        selection.observe(step, {"loss": loss, "accuracy": 1 - loss})
    assert selection.should_stop  # two evaluations (40, 50) without improvement
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert (record["step"], record["metric"], record["value"]) == (30, "validation/loss", 0.4)
    assert record["metrics"]["accuracy"] == pytest.approx(0.6)
    fresh = _dense_model()
    assert restore_model(fresh, str(tmp_path), "best") == 30
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), weights_at[30])

    # Accuracy is higher-is-better; best_mode=min turns it round.
    for mode, expected in [("auto", 20), ("min", 10)]:
        directory = tmp_path / mode
        config = TrainConfig(best_metric="validation/accuracy", best_mode=mode)
        selection = ModelSelection(
            config, frozenset({"loss"}), model, tf.distribute.get_strategy(), RunDirectory(directory)
        )
        for step, accuracy in [(10, 0.6), (20, 0.8), (30, 0.7)]:
            selection.observe(step, {"accuracy": accuracy, "loss": 0.0})
        assert json.loads((directory / "best" / "best.json").read_text())["step"] == expected


def test_weight_averages_follow_the_ema_formula_on_every_replica_and_survive_a_checkpoint(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _dense_model()
        averages = WeightAverages(model, decay=0.75)
    kernel = model.layers[0].kernel
    start = kernel.numpy()
    expected = start.copy()
    for value in [1.0, -2.0, 4.0]:
        kernel.assign(np.full_like(start, value))
        strategy.run(tf.function(averages.update))
        expected = 0.75 * expected + 0.25 * value
    for replica_value in strategy.experimental_local_results(averages.averages[0]):
        np.testing.assert_allclose(replica_value.numpy(), expected, rtol=1e-6)

    with averages.swapped_in():
        np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(kernel.numpy(), np.full_like(start, 4.0))  # trained weights back

    path = tf.train.Checkpoint(model=model, averages=averages).save(str(tmp_path / "ckpt"))
    with strategy.scope():
        restored_model = _dense_model()
        restored = WeightAverages(restored_model, decay=0.75)
    tf.train.Checkpoint(model=restored_model, averages=restored).restore(path)
    restored.apply()
    np.testing.assert_allclose(restored_model.layers[0].kernel.numpy(), expected, rtol=1e-6)


def test_layer_decay_scales_each_block_by_decay_to_its_depth_from_the_top(vocab_path):
    values = _loaded_smoke()
    values["model"]["vocab_path"] = str(vocab_path)
    config = experiment.parse(values)
    task = task_registry.build_task(config)
    model = task.build_model()
    variables = model.trainable_variables
    depths = dict((v.ref(), d) for v, d in task.encoder.layer_depths(variables))
    num_layers = config.model.architecture.num_layers
    by_name = {v.name: depths.get(v.ref(), 0) for v in variables}
    assert {d for name, d in by_name.items() if "layer_0/" in name} == {num_layers}
    assert {d for name, d in by_name.items() if f"layer_{num_layers - 1}/" in name} == {1}
    assert {d for name, d in by_name.items() if "/embeddings/" in name} == {num_layers + 1}
    assert all(
        d == 0 for name, d in by_name.items() if "pooler" in name or "layer_" not in name and "embeddings" not in name
    )

    # One AdamW step on the same gradients, with and without the multipliers: each variable moves
    # by decay**depth times as far (weight decay included).
    start = [v.numpy() for v in variables]
    gradients = [tf.random.stateless_normal(v.shape, seed=(i, 0)) for i, v in enumerate(variables)]
    moves = []
    for decay in (1.0, 0.5):
        for variable, value in zip(variables, start):
            variable.assign(value)
        optimizer = optimization.create_optimizer(1e-2, 10, 0.0, 0.01)
        optimizer.jit_compile = False  # the same update_step; XLA would compile it per variable shape here
        optimizer.set_rate_multipliers([(v, decay**d) for v, d in task.encoder.layer_depths(variables)])
        optimizer.apply_gradients(zip(gradients, variables))
        moves.append([v.numpy() - value for v, value in zip(variables, start)])
    for variable, plain, scaled in zip(variables, *moves):
        np.testing.assert_allclose(scaled, plain * 0.5 ** depths.get(variable.ref(), 0), rtol=1e-4, atol=3e-7)


def _loaded_smoke() -> dict:
    return smoke.get_config().to_dict()


def _write_json(values: dict, path: pathlib.Path) -> pathlib.Path:
    path.write_text(json.dumps(values))
    return path


def test_a_config_json_loads_back_to_the_same_experiment_and_names_a_key_it_does_not_know(tmp_path):
    values = _loaded_smoke()
    values["model"]["vocab_path"] = "vocab.txt"
    values["train"]["learning_rate"] = 1e-4
    values["task"]["labels"] = ["neg", "pos"]
    loaded = experiment.from_json(str(_write_json(values, tmp_path / "config.json")))
    assert experiment.parse(loaded) == experiment.parse(values)
    values["train"]["learning_rat"] = 1.0
    with pytest.raises(ConfigError, match=r"config.json: unknown config key train.learning_rat"):
        experiment.from_json(str(_write_json(values, tmp_path / "config.json")))
    (tmp_path / "broken.json").write_text('{"train": ')
    with pytest.raises(ConfigError, match=r"broken.json: not a JSON config"):
        experiment.from_json(str(tmp_path / "broken.json"))


def test_config_arguments_name_a_config_a_file_or_a_run():
    assert experiment.config_file_argument("minilm_imdb_long") == os.path.join(
        experiment.CONFIGS_DIR, "minilm_imdb_long.py"
    )
    assert experiment.config_file_argument("configs/smoke.py") == "configs/smoke.py"
    assert experiment.config_file_argument("runs/x/config.json").endswith("trainer/saved_config.py:runs/x/config.json")
    assert "minilm_imdb_long" in experiment.named_configs() and "smoke" in experiment.named_configs()


def test_a_resume_refuses_what_the_weights_depend_on_and_lists_the_rest():
    recorded = _loaded_smoke()
    changed = json.loads(json.dumps(recorded))
    changed["train"]["steps"] = 99
    changed["train"]["eval_every_steps"] = 7
    assert experiment.resume_changes(recorded, changed) == {
        "train.eval_every_steps": [0, 7],
        "train.steps": [20, 99],
    }
    for section, key, value in [
        ("data", "seq_length", 64),
        ("model", "pooling", "mean"),
        ("task", "type", "multiclass"),
        ("task", "labels", ["a", "b"]),
        ("model", "vocab_path", "other.txt"),
    ]:
        refused = json.loads(json.dumps(recorded))
        refused[section][key] = value
        with pytest.raises(ConfigError, match=rf"different {section}.{key} "):
            experiment.resume_changes(recorded, refused)
    refused = json.loads(json.dumps(recorded))
    refused["model"]["bert"]["num_layers"] = 3
    with pytest.raises(ConfigError, match=r"model.bert.num_layers"):
        experiment.resume_changes(recorded, refused)


def test_profile_steps_are_two_increasing_steps():
    assert profiling.parse_steps("20,25") == (20, 25)
    assert profiling.parse_steps(None) is None
    for bad in ["25,20", "5", "a,b", "3,3", "-1,4", "1,2,3"]:
        with pytest.raises(UserError, match=rf"--profile_steps={bad}: expected two step numbers"):
            profiling.parse_steps(bad)


def test_a_checkpoint_removed_while_the_evaluator_reads_it_is_an_error_it_can_skip(tmp_path):
    model = _dense_model()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "checkpoints" / "ckpt"))
    for name in os.listdir(tmp_path / "checkpoints"):
        if name.startswith("ckpt-1."):
            os.remove(tmp_path / "checkpoints" / name)  # what the trainer's keep-K rotation does
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        restore_model(model, str(tmp_path), path)


# ----- end to end: one run that stops early, with averages, read by every check -----

SELECTION_FLAGS = (
    "--config.train.steps=40",
    "--config.train.eval_every_steps=10",
    "--config.train.checkpoint_every_steps=10",
    "--config.train.keep_checkpoints=10",
    # The first evaluation is the best whatever training does next: nothing improves on it by 1.0.
    "--config.train.best_metric=validation/accuracy",
    "--config.train.min_delta=1.0",
    "--config.train.early_stopping_patience=2",
    "--config.train.ema_decay=0.9",
)


@pytest.fixture(scope="module")
def selection_run(tmp_path_factory, vocab_path, imdb_dir):
    model_dir = tmp_path_factory.mktemp("selection") / "run"
    process = check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *SELECTION_FLAGS, "--profile_steps=3,6"))
    return model_dir, process.stderr


def _averaged_outputs(model_dir: pathlib.Path, checkpoint: str | None, texts: list[str]) -> np.ndarray:
    config = experiment.parse(json.loads((model_dir / "config.json").read_text()))
    task = task_registry.build_task(config)
    task.prepare_labels(None, config.task.labels, str(model_dir))
    model = task.build_model()
    if checkpoint is None:
        restore_model(model, str(model_dir), "best")
    else:
        averages = WeightAverages(model, config.train.ema_decay)
        restore_model(model, str(model_dir), checkpoint, averages=averages)
        averages.apply()
    outputs = model(task.build_tokenizer()(tf.constant(texts)), training=False)
    return task.serving_outputs(outputs)["probability"].numpy()


@pytest.mark.slow
def test_early_stopping_keeps_and_exports_the_best_beside_the_last(selection_run):
    model_dir, log = selection_run
    assert "Early stopping at step 30" in log
    assert log.count("eval validation at step 30") == 1
    best = json.loads((model_dir / "best" / "best.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert best["step"] == 10 and metrics["best"] == best
    assert (metrics["step"], metrics["exported_step"]) == (30, 10)
    eval_accuracy = read_scalars(model_dir / "eval")["accuracy"]
    assert sorted(eval_accuracy) == [10, 20, 30]
    assert best["value"] == pytest.approx(eval_accuracy[10], abs=1e-6)
    assert sorted(os.listdir(model_dir / "export")) == ["10"]
    assert sorted(os.listdir(model_dir / "export_last")) == ["30"]

    # export/ serves the best checkpoint's (averaged) weights; export_last/ the averages at step 30.
    served_best = serve_outputs_in_fresh_process(model_dir / "export" / "10", TEXTS, model_dir)["probability"]
    np.testing.assert_allclose(served_best, _averaged_outputs(model_dir, None, TEXTS).ravel(), atol=1e-5)
    served_last = serve_outputs_in_fresh_process(model_dir / "export_last" / "30", TEXTS, model_dir)["probability"]
    last_checkpoint = str(model_dir / "checkpoints" / "ckpt-30")
    np.testing.assert_allclose(served_last, _averaged_outputs(model_dir, last_checkpoint, TEXTS).ravel(), atol=1e-5)
    profile_files = list((model_dir / "train" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert profile_files and "Profiling steps 3..6" in log


@pytest.mark.slow
def test_evaluate_any_checkpoint_with_its_averages(selection_run, vocab_path, imdb_dir, tmp_path):
    model_dir, _ = selection_run
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    expected = json.loads((model_dir / "metrics.json").read_text())["test"]
    check_ok(run_trainer(copy, vocab_path, imdb_dir, *SELECTION_FLAGS, "--mode=evaluate", "--checkpoint=best"))
    evaluated = json.loads((copy / "metrics.json").read_text())["test"]
    for name in ("loss", "accuracy", "auc"):
        assert evaluated[name] == pytest.approx(expected[name], abs=1e-5), name


@pytest.mark.slow
def test_a_stopped_run_stays_stopped_a_passed_back_config_resumes_it_and_fixed_keys_are_refused(
    selection_run, vocab_path, imdb_dir, tmp_path
):
    model_dir, _ = selection_run
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    shutil.rmtree(copy / "train" / "plugins")
    before = snapshot(copy)
    refused = run_trainer(copy, vocab_path, imdb_dir, *SELECTION_FLAGS, "--config.model.pooling=mean")
    check_refused(refused, r"trained with a different model.pooling \(model.pooling: 'cls' -> 'mean'\)")
    assert snapshot(copy) == before

    # The run's own config.json, with one change that can apply to it.
    rerun = check_ok(
        subprocess.run(
            [
                *PYTHON,
                "-m",
                "trainer.main",
                f"--config={copy / 'config.json'}",
                f"--model_dir={copy}",
                "--config.train.eval_every_steps=5",
            ],
            env=subprocess_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    assert "Training stopped early at step 30 (early stopping): not resumed." in rerun.stderr
    assert json.loads((copy / "metrics.json").read_text())["step"] == 30
    changes = json.loads((copy / "config_changes.json").read_text())
    assert changes == {"resumes": [{"step": 30, "changes": {"train.eval_every_steps": [10, 5]}}]}


# ----- a continuous evaluator beside a training job on loopback -----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_continuous_evaluator_beside_training_matches_evaluate_mode_at_each_step(vocab_path, imdb_dir, tmp_path):
    model_dir = tmp_path / "run"
    worker = f"127.0.0.1:{_free_port()}"
    flags = (
        "--strategy=multi_worker_mirrored",
        "--config.train.steps=30",
        "--config.train.checkpoint_every_steps=5",
        "--config.train.keep_checkpoints=10",
        "--config.train.best_metric=validation/accuracy",
    )

    def start(task_type: str, mode: str, log: pathlib.Path) -> subprocess.Popen:
        env = subprocess_env()
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [worker]}, "task": {"type": task_type, "index": 0}})
        command = trainer_command(model_dir, vocab_path, imdb_dir, *flags, f"--mode={mode}")
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("w"))

    trainer = start("worker", "train", tmp_path / "trainer.log")
    evaluator = start("evaluator", "continuous_eval", tmp_path / "evaluator.log")
    assert trainer.wait(timeout=400) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
    assert evaluator.wait(timeout=400) == 0, (tmp_path / "evaluator.log").read_text()[-3000:]
    evaluator_log = (tmp_path / "evaluator.log").read_text()
    assert "TF_CONFIG names this task the evaluator" in evaluator_log
    assert "Evaluated the final step, 30." in evaluator_log

    test_accuracy = read_scalars(model_dir / "eval_test")["accuracy"]
    test_loss = read_scalars(model_dir / "eval_test")["loss"]
    evaluated_steps = sorted(test_accuracy)
    assert evaluated_steps[-1] == 30 and set(evaluated_steps) <= {0, 5, 10, 15, 20, 25, 30}
    # The final step and the first one the evaluator saw, each evaluated again on its own.
    for step in sorted({evaluated_steps[0], 30}):
        copy = tmp_path / f"evaluate-{step}"
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("metrics.json"))
        checkpoint = copy / "checkpoints" / f"ckpt-{step}"
        check_ok(run_trainer(copy, vocab_path, imdb_dir, "--mode=evaluate", f"--checkpoint={checkpoint}"))
        evaluated = json.loads((copy / "metrics.json").read_text())["test"]
        assert evaluated["accuracy"] == pytest.approx(test_accuracy[step], abs=1e-6)
        assert evaluated["loss"] == pytest.approx(test_loss[step], abs=1e-5)

    # The evaluator kept the best and exported it; the trainer exported its last step beside it.
    best = json.loads((model_dir / "best" / "best.json").read_text())
    validation_accuracy = read_scalars(model_dir / "eval")["accuracy"]
    assert best["value"] == pytest.approx(max(validation_accuracy.values()), abs=1e-6)
    assert os.listdir(model_dir / "export") == [str(best["step"])]
    assert os.listdir(model_dir / "export_last") == ["30"]
    assert json.loads((model_dir / "metrics.json").read_text())["exported_step"] == best["step"]


# ----- packaging -----


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, module", [("bert-trainer", "trainer.main"), ("bert-trainer-report", "experiments.report")]
)
def test_console_scripts_are_the_python_m_commands(script, module):
    path = pathlib.Path(sys.executable).parent / script
    assert path.is_file(), f"{script} is not installed: pip install -c constraints.txt -e '.[test]'"
    argv = ["--config=no_such_config"] if module == "trainer.main" else ["--no_such_flag"]
    outputs = []
    for command in ([str(path)], [sys.executable, "-m", module]):
        process = subprocess.run(
            command + argv, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120
        )
        outputs.append((process.returncode, process.stderr.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1] and outputs[0][0] == 2


def test_requirements_are_ranges_and_constraints_pin_each_of_them():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for requirements in ("requirements.txt", "requirements-test.txt"):
        for line in (REPO / requirements).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert "==" not in line, f"{requirements}: {line} is an exact pin; pins go in constraints.txt"
                name = line.split(">")[0].split("<")[0].split("[")[0].strip().lower().replace("_", "-")
                assert name in pins, f"constraints.txt does not pin {name} ({requirements})"
