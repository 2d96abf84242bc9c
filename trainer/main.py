r"""Fine-tunes a BERT-family encoder for text classification.

Wires config -> strategy -> data -> task -> train/eval loop -> export.

  python -m trainer.main --strategy=mirrored \
      --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz

Any config value can be overridden: --config.train.batch_size=64.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags
import tensorflow as tf
import tf_keras

from trainer import config as config_lib
from trainer import export as export_lib
from trainer import predict as predict_lib
from trainer import strategy as strategy_lib
from trainer import workdir
from trainer.checkpointing import CheckpointError
from trainer.data import sources
from trainer.models.hf_format import WeightImportError
from trainer.models.hub_loading import HubLoadError
from trainer.task import ClassificationTask
from trainer.train_loop import CheckpointWriteError, PreemptedError, Trainer, TrainingDivergedError

_CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
MODES = ("train_and_evaluate", "train", "evaluate", "export", "predict")
# Exit statuses a launcher can act on (0 = done, 2 = bad flags, config or data).
EXIT_DIVERGED = 3
# Stopped early, restart the job to resume: SIGTERM handled after a checkpoint was saved,
# or a peer worker lost. 128 + SIGTERM, which Kubeflow's restartPolicy=ExitCode retries.
EXIT_PREEMPTED = 143

# Python errors that ml_collections raises for a --config.* override it rejects
# (an unknown key, a value of the wrong type); absl would let them through as tracebacks.
_CONFIG_OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError, OSError)


def _exit_with_flag_error(error: Exception) -> None:
    # ml_collections wraps a KeyError for an unknown key in an AttributeError.
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]
    message = f"unknown config key {error.args[0]}" if isinstance(error, KeyError) and error.args else str(error)
    sys.stderr.write(f"FATAL Flags parsing error: {message}\nPass --help to see the flags.\n")
    sys.exit(2)


try:
    config_flags.DEFINE_config_file(
        "config",
        os.path.join(_CONFIGS_DIR, "minilm_imdb.py"),
        "Experiment config file (configs/*.py). Override any value with --config.<key>=<value>, "
        "e.g. --config.train.batch_size=64. Every key, its default and meaning: trainer/config.py.",
        lock_config=True,
    )
except _CONFIG_OVERRIDE_ERRORS as e:
    # Without --config, ml_collections applies the overrides to the default config right here.
    _exit_with_flag_error(e)
flags.DEFINE_enum("mode", "train_and_evaluate", MODES, "What to do.")
flags.DEFINE_enum(
    "strategy",
    "mirrored",
    strategy_lib.STRATEGIES,
    "Distribution strategy: mirrored = all local GPUs (the CPU when there is none); "
    "multi_worker_mirrored = a cluster from TF_CONFIG (or --worker_hosts/--task_index); "
    "one_device; default = no distribution.",
)
flags.DEFINE_string(
    "worker_hosts", None, "multi_worker_mirrored without TF_CONFIG: comma-separated host:port of every worker."
)
flags.DEFINE_integer("task_index", None, "multi_worker_mirrored with --worker_hosts: this worker's index (0 = chief).")
flags.DEFINE_bool(
    "deterministic", False, "Deterministic ops and fixed seeds: two runs on one machine give identical weights."
)
flags.DEFINE_integer(
    "num_cpu_devices", 1, "Split the CPU into this many logical devices (MirroredStrategy tests without GPUs)."
)
flags.DEFINE_string("model_dir", "runs/default", "Checkpoints, summaries, metrics.json and export/ go here.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default ~/tensorflow_datasets).")
flags.DEFINE_multi_string("text", [], "--mode=predict: a text to classify (repeatable).")
flags.DEFINE_string("input_file", None, "--mode=predict: a file with one text per line.")

FLAGS = flags.FLAGS

USER_ERRORS = (
    config_lib.ConfigError,
    sources.DataError,
    HubLoadError,
    WeightImportError,
    CheckpointError,
)


def _export_dir() -> str:
    return os.path.join(FLAGS.model_dir, "export")


def _export(trainer: Trainer) -> str | None:
    if not trainer.is_chief:
        return None
    return export_lib.export(trainer.tokenizer, trainer.model, _export_dir(), trainer.step)


def _restored_trainer(config, task, strategy) -> Trainer:
    trainer = Trainer(config, task, strategy, FLAGS.model_dir)
    if trainer.restore() is None:
        raise config_lib.ConfigError(
            f"--mode={FLAGS.mode} needs a trained model, but --model_dir={FLAGS.model_dir} has no checkpoint."
        )
    return trainer


def _predict(config, task, strategy) -> None:
    # Invalid UTF-8 in argv arrives as lone surrogates, which TensorFlow and stdout reject.
    texts = [text.encode("utf-8", "replace").decode("utf-8") for text in FLAGS.text]
    if FLAGS.input_file:
        if os.path.isdir(FLAGS.input_file):
            raise config_lib.ConfigError(f"--input_file={FLAGS.input_file} is a directory; give a text file.")
        if not os.path.exists(FLAGS.input_file):
            raise config_lib.ConfigError(f"--input_file={FLAGS.input_file}: no such file.")
        texts += predict_lib.read_texts(FLAGS.input_file)
    if not texts:
        raise config_lib.ConfigError("--mode=predict needs --text=... or --input_file=...")
    export_path = export_lib.latest_export(_export_dir())
    if export_path is None:
        logging.info("No export in %s yet: exporting the latest checkpoint.", _export_dir())
        export_path = _export(_restored_trainer(config, task, strategy))
    for text, probability in zip(texts, predict_lib.predict(export_path, texts)):
        label = "positive" if probability >= 0.5 else "negative"
        sys.stdout.write(f"{label}\t{probability:.4f}\t{text}\n")


def _create_strategy(config) -> tf.distribute.Strategy:
    if FLAGS.worker_hosts is not None or FLAGS.task_index is not None:
        if FLAGS.strategy != "multi_worker_mirrored" or FLAGS.worker_hosts is None or FLAGS.task_index is None:
            raise config_lib.ConfigError(
                "--worker_hosts and --task_index go together, with --strategy=multi_worker_mirrored."
            )
        try:
            strategy_lib.set_tf_config(FLAGS.worker_hosts, FLAGS.task_index)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from e
    strategy_lib.split_cpu(FLAGS.num_cpu_devices)
    return strategy_lib.create_strategy(
        FLAGS.strategy, config.distribute.communication, config.distribute.connect_timeout_seconds
    )


def _check_model_dir(trainer: Trainer) -> None:
    """One run per model_dir, and room for checkpoints and an export, before training starts."""
    if not trainer.is_chief:
        return
    workdir.lock(FLAGS.model_dir)
    # Weights plus two Adam slots, per kept checkpoint (+1 being written), plus an export.
    weight_bytes = sum(v.shape.num_elements() * 4 for v in trainer.model.variables)
    workdir.check_writable(
        FLAGS.model_dir, weight_bytes * 3 * (trainer.config.train.keep_checkpoints + 1) + weight_bytes
    )


def run(config) -> None:
    config_lib.validate(config)
    if FLAGS.mode != "predict" and (FLAGS.text or FLAGS.input_file):
        raise config_lib.ConfigError("--text and --input_file are only for --mode=predict.")
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = _create_strategy(config)
    config_lib.validate_batch_sizes(config, strategy.num_replicas_in_sync, f"--strategy={FLAGS.strategy}")
    tf_keras.utils.set_random_seed(config.seed)
    # Before any layer is built: layers take their compute dtype from the global policy.
    tf_keras.mixed_precision.set_global_policy(config.train.precision)
    task = ClassificationTask(config)
    logging.info(
        "Mode %s, strategy %s with %d replica(s), global batch %d, model_dir %s.",
        FLAGS.mode,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        config.train.batch_size,
        FLAGS.model_dir,
    )
    if FLAGS.mode == "predict":
        _predict(config, task, strategy)
        return
    if FLAGS.mode == "export":
        _export(_restored_trainer(config, task, strategy))
        return

    data = sources.load_splits(config.data, config.seed, FLAGS.data_dir)
    if FLAGS.mode != "evaluate" and len(data.train) < config.train.batch_size:
        raise sources.DataError(
            f"{len(data.train)} training examples do not fill one global batch of {config.train.batch_size} "
            "(--config.train.batch_size)."
        )
    validation = data.validation if len(data.validation) else None
    if FLAGS.mode == "evaluate":
        trainer = _restored_trainer(config, task, strategy)
        split_name, examples = ("test", data.test) if data.test is not None else ("validation", validation)
        if examples is None:
            raise config_lib.ConfigError("--mode=evaluate needs a test split or --config.data.validation_fraction > 0.")
        trainer.write_results({split_name: trainer.evaluate(examples, split_name)})
        return

    trainer = Trainer(config, task, strategy, FLAGS.model_dir, train_size=len(data.train))
    _check_model_dir(trainer)
    if FLAGS.mode == "train":
        trainer.train(data.train, None)
    else:
        validation_metrics = trainer.train(data.train, validation)
        results = {"validation": validation_metrics} if validation is not None else {}
        if data.test is not None:
            results["test"] = trainer.evaluate(data.test, "test")
        trainer.write_results(results)
    _export(trainer)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line message (no traceback) for every bad flag."""
    try:
        return FLAGS(argv)
    except (flags.Error, *_CONFIG_OVERRIDE_ERRORS) as e:
        _exit_with_flag_error(e)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow's own INFO lines (one per all-reduce set-up) would drown the progress log.
    tf.get_logger().setLevel("WARNING")
    try:
        run(FLAGS.config)
    except USER_ERRORS as e:
        logging.error("%s", e)
        sys.exit(2)
    except TrainingDivergedError as e:
        logging.error("%s", e)
        sys.exit(EXIT_DIVERGED)
    except CheckpointWriteError as e:
        logging.error("%s", e)
        sys.exit(1)
    except PreemptedError as e:
        logging.warning("%s Exiting with status %d: restart the job to resume.", e, EXIT_PREEMPTED)
        sys.exit(EXIT_PREEMPTED)
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
        if FLAGS.strategy != "multi_worker_mirrored":
            raise
        # Peer failures surface as collective errors on the survivors. Not this worker's
        # fault: a status that launchers retry.
        logging.error(
            "Lost contact with a peer worker (%s). Exiting with status %d: restart the job to resume "
            "from the last checkpoint.",
            " ".join(str(e.message).split())[:400],
            EXIT_PREEMPTED,
        )
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
