r"""Fine-tunes a BERT-family encoder for text classification.

Wires config -> strategy -> task -> data -> model -> train/eval loop -> run directory -> export.

  python -m trainer.main --strategy=mirrored \
      --config=configs/minilm_imdb.py --config.data.path=aclImdb_v1.tar.gz

Any config value can be overridden: --config.train.batch_size=64.
Exit statuses: 0 done, 2 bad input, 3 diverged, 1 crash or failed write,
143 stopped early (restart to resume); see trainer/errors.py.
"""

import contextlib
import os
import sys

from absl import app, flags, logging
import tensorflow as tf
import tf_keras

from trainer import command_line, errors, experiment
from trainer import strategy as strategy_lib
from trainer.config import Experiment, check_batch_sizes
from trainer.data import prepared, sources
from trainer.data.input_plan import InputPlan
from trainer.data.stream_input import StreamInput
from trainer.data.streams import Stream
from trainer.models.tokenizer import Tokenizer
from trainer.run_dir import RunDirectory
from trainer.serving import export as export_lib
from trainer.serving import predict as predict_lib
from trainer.tasks import registry as task_registry
from trainer.tasks.base import Task
from trainer.training import continuous_eval, precision, profiling, steps
from trainer.training.averaging import WeightAverages
from trainer.training.checkpointing import CheckpointError, restore_model
from trainer.training.evaluation import Evaluator
from trainer.training.loop import Trainer
from trainer.training.selection import ModelSelection

MODES = ("train_and_evaluate", "train", "evaluate", "continuous_eval", "export", "predict")

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
flags.DEFINE_multi_string("text", [], "--mode=predict: a text to classify (repeatable).")
flags.DEFINE_string("input_file", None, "--mode=predict: a file with one text per line.")
flags.DEFINE_string(
    "checkpoint",
    "latest",
    "--mode=export/evaluate: which weights: latest (the newest checkpoint), best (model_dir/best/, kept by "
    "train.best_metric) or a checkpoint's path (model_dir/checkpoints/ckpt-500).",
)
flags.DEFINE_integer(
    "eval_timeout_seconds",
    3600,
    "--mode=continuous_eval: stop when no new checkpoint has appeared for this long (it also stops after the "
    "final step's).",
)

flags.DEFINE_string(
    "profile_steps",
    None,
    "Training: capture a TensorFlow profiler trace of steps A..B (--profile_steps=20,25) into model_dir/train "
    "for TensorBoard's Profile tab (pip install tensorboard-plugin-profile to view it; see BUILD.md).",
)

FLAGS = flags.FLAGS


def _restore(model: tf_keras.Model, run_dir: RunDirectory, which: str, ema_decay: float) -> int:
    """Restores the weights `which` names (see --checkpoint) into `model`: the averaged ones when the run
    kept averages (best/ holds the weights that were evaluated); returns the step."""
    if not ema_decay or which == "best":
        return restore_model(model, run_dir.path, which)
    averages = WeightAverages(model, ema_decay)
    step = restore_model(model, run_dir.path, which, averages=averages)
    averages.apply()
    return step


def _export_checkpoint(task: Task, run_dir: RunDirectory, ema_decay: float) -> str | None:
    """Exports the --checkpoint model (chief only); returns the export's path."""
    if not run_dir.is_chief:
        return None
    # Outside the strategy's scope: restoring and exporting take no collective.
    model = task.build_model()
    step = _restore(model, run_dir, FLAGS.checkpoint, ema_decay)
    return export_lib.export(task, task.build_tokenizer(), model, run_dir.export, step)


def _predict(task: Task, run_dir: RunDirectory, ema_decay: float) -> None:
    # Invalid UTF-8 in argv arrives as lone surrogates, which TensorFlow and stdout reject.
    texts = [text.encode("utf-8", "replace").decode("utf-8") for text in FLAGS.text]
    if FLAGS.input_file:
        if os.path.isdir(FLAGS.input_file):
            raise errors.UserError(f"--input_file={FLAGS.input_file} is a directory; give a text file.")
        if not os.path.exists(FLAGS.input_file):
            raise errors.UserError(f"--input_file={FLAGS.input_file}: no such file.")
        texts += predict_lib.read_texts(FLAGS.input_file)
    if not texts:
        raise errors.UserError("--mode=predict needs --text=... or --input_file=...")
    loaded = predict_lib.load_newest(run_dir.export)
    if loaded is None:
        logging.info("No usable export in %s: exporting the latest checkpoint.", run_dir.export)
        try:
            export_path = _export_checkpoint(task, run_dir, ema_decay)
        except CheckpointError:
            found = ", ".join(os.path.relpath(p, run_dir.path) for p in export_lib.complete_exports(run_dir.export))
            raise errors.UserError(
                f"--model_dir={run_dir.path} has nothing to predict with: "
                f"{f'the exports {found} do not load' if found else 'no export'} and no checkpoint."
            ) from None
        loaded = export_path, predict_lib.load(export_path)
    pairs = predict_lib.split_pairs(texts) if task.pairs else None
    firsts = [first for first, _ in pairs] if pairs else texts
    seconds = [second for _, second in pairs] if pairs else None
    predictions = task.format_predictions(predict_lib.predict(loaded[1], firsts, seconds))
    for text, prediction in zip(texts, predictions):
        sys.stdout.write(f"{prediction}\t{text}\n")


def run(config: Experiment, config_values: dict) -> None:
    """Runs --mode on the parsed `config`; `config_values` is what config.json records."""
    if FLAGS.mode != "predict" and (FLAGS.text or FLAGS.input_file):
        raise errors.UserError("--text and --input_file are only for --mode=predict.")
    if FLAGS.mode != "continuous_eval" and strategy_lib.is_evaluator():
        raise errors.UserError(f'TF_CONFIG task type "evaluator" runs --mode=continuous_eval, not --mode={FLAGS.mode}.')
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy_lib.from_flags(FLAGS.strategy, config.distribute, FLAGS.num_cpu_devices)
    check_batch_sizes(config, strategy.num_replicas_in_sync, f"--strategy={FLAGS.strategy}")
    tf_keras.utils.set_random_seed(config.seed)
    precision.set_policy(config.train.precision)
    task = task_registry.build_task(config)
    run_dir = RunDirectory(FLAGS.model_dir, strategy_lib.is_chief(strategy))
    recorded_labels = tuple(run_dir.read_config().get("task", {}).get("labels", ()))
    logging.info(
        "Mode %s, strategy %s with %d replica(s), global batch %d, model_dir %s.",
        FLAGS.mode,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        config.train.batch_size,
        FLAGS.model_dir,
    )
    if FLAGS.mode in ("predict", "export"):
        task.prepare_labels(None, recorded_labels, run_dir.path)
        if FLAGS.mode == "predict":
            _predict(task, run_dir, config.train.ema_decay)
        else:
            _export_checkpoint(task, run_dir, config.train.ema_decay)
        return

    data = sources.load_splits(config.data, config.seed, FLAGS.data_dir)
    tokenizer = task.build_tokenizer()
    for split in (data.train, data.validation, data.test):
        if isinstance(split, Stream) and split.source.format == "prepared":
            where = f"{split.source.flag}={os.path.dirname(split.files[0])}"
            prepared.check_tokenizer(split.source.tokenizer, where, tokenizer.fingerprint)
    task.prepare_labels(sources.label_examples(data.train, config.data.label_sample), recorded_labels, run_dir.path)
    # Held-out labels in memory are checked now, naming the line at fault, not at their first evaluation.
    for held_out in (data.validation, data.test):
        if isinstance(held_out, sources.Examples) and len(held_out):
            task.encode_labels(held_out.labels, held_out.ids)
    config_values["task"]["labels"] = list(task.label_names)
    training = FLAGS.mode not in ("evaluate", "continuous_eval")
    streamed = isinstance(data.train, Stream)
    # A stream's size is unknown: it trains train.steps (experiment.validate insists).
    steps_per_epoch = 0 if streamed else InputPlan.steps_per_epoch(len(data.train), config.train.batch_size)
    final_step = config.train.steps or config.train.epochs * steps_per_epoch
    validation = data.validation if sources.has_examples(data.validation) else None
    with strategy.scope():
        model = task.build_model()
    input_plan = _input(config, task, tokenizer, strategy, streamed)
    jit_compile = steps.resolve_jit_compile(config.train.jit_compile)
    evaluator = Evaluator(task, model, strategy, input_plan, run_dir, config.eval.batch_size, jit_compile)
    if FLAGS.mode == "continuous_eval":
        with strategy.scope():
            selection = ModelSelection(config.train, task.lower_is_better, model, strategy, run_dir)
            averages = WeightAverages(model, config.train.ema_decay) if config.train.ema_decay else None
        continuous_eval.evaluate_checkpoints(
            task, model, evaluator, selection, averages, validation, data.test, final_step, FLAGS.eval_timeout_seconds
        )
        return
    if not training:
        split_name, examples = ("test", data.test) if data.test is not None else ("validation", validation)
        if examples is None:
            raise errors.UserError("--mode=evaluate needs a test split or --config.data.validation_fraction > 0.")
        with strategy.scope():
            step = _restore(model, run_dir, FLAGS.checkpoint, config.train.ema_decay)
        run_dir.write_metrics({split_name: evaluator.evaluate(examples, split_name, step)}, step=step)
        return

    trainer = Trainer(
        config.train,
        config.distribute,
        task,
        model,
        strategy,
        input_plan,
        run_dir,
        steps_per_epoch,
        evaluator,
        profiling.parse_steps(FLAGS.profile_steps),
    )
    # A checkpoint or recorded config that does not fit this config refuses the run before anything in
    # model_dir is written.
    resumed = trainer.restore() is not None
    changes = experiment.resume_changes(run_dir.read_config(), config_values) if resumed else {}
    for key, (before, after) in changes.items():
        logging.info("Resuming with %s changed: %r -> %r (recorded in config_changes.json).", key, before, after)
    run_dir.claim(trainer.disk_needed_bytes())
    run_dir.record_config_changes(trainer.step, changes)
    run_dir.write_config(config_values)
    run_dir.write_hparams(experiment.hparams(config_values))
    evaluate = FLAGS.mode == "train_and_evaluate"
    trainer.train(data.train, validation if evaluate else None)
    results = {"validation": trainer.validate(validation, trainer.step)} if evaluate and validation else {}
    _finish(trainer, data.test if evaluate else None, results, evaluate)


def _input(
    config: Experiment, task: Task, tokenizer: Tokenizer, strategy: tf.distribute.Strategy, streamed: bool
) -> InputPlan | StreamInput:
    """The input side: exact plans over in-memory examples, or pipelines over streamed files."""
    data_config = config.data
    if streamed:
        if data_config.service_address:
            from trainer.data import service_client  # grpc: only for runs that use it.

            service_client.check_dispatcher(data_config.service_address)
        return StreamInput(
            strategy,
            tokenizer,
            task.label_encoder(),
            data_config.seq_length,
            data_config.num_buckets,
            config.seed,
            task.pairs,
            data_config.shuffle_buffer,
            data_config.skip_corrupt_records,
            data_config.service_address,
        )
    return InputPlan(
        strategy,
        tokenizer,
        task.encode_labels,
        data_config.seq_length,
        data_config.num_buckets,
        config.seed,
        config.train.steps_per_loop,
    )


def _finish(trainer: Trainer, test: sources.Examples | None, results: dict, evaluated: bool) -> None:
    """Exports the model (the best checkpoint's when there is one, the last step's beside it), evaluates
    the exported model on the test split, and records the results in metrics.json."""
    run_dir, task, step = trainer.run_dir, trainer.task, trainer.step
    tokenizer = trainer.input_plan.tokenizer
    if trainer.selection.enabled and not evaluated:
        # --mode=train beside a continuous evaluator, which keeps the best and exports it to export/.
        if run_dir.is_chief:
            with trainer.averaged():
                export_lib.export(task, tokenizer, trainer.model, run_dir.export_last, step)
        logging.info(
            "Exported step %d to %s; with --config.train.best_metric, --mode=continuous_eval exports the best "
            "model to %s.",
            step,
            run_dir.export_last,
            run_dir.export,
        )
        return
    best_step = int(trainer.selection.best_step.numpy()) if trainer.selection.enabled else -1
    if 0 <= best_step != step:
        if run_dir.is_chief:
            with trainer.averaged():
                export_lib.export(task, tokenizer, trainer.model, run_dir.export_last, step)
        # The best checkpoint holds the weights that were evaluated (averaged ones, with EMA).
        restore_model(trainer.model, run_dir.path, "best")
    exported = best_step if best_step >= 0 else step
    with trainer.averaged() if exported == step else contextlib.nullcontext():
        if test is not None:
            results["test"] = trainer.evaluator.evaluate(test, "test", exported)
        if run_dir.is_chief:
            export_lib.export(task, tokenizer, trainer.model, run_dir.export, exported)
    if results:
        best = {"best": run_dir.read_best()} if best_step >= 0 else {}
        trainer_config = trainer.config
        run_dir.write_metrics(
            {**results, **best},
            step=step,
            exported_step=exported,
            steps_per_epoch=trainer.steps_per_epoch,
            examples_trained=step * trainer_config.batch_size,
        )


def main(argv: list[str]) -> None:
    del argv  # parse_flags refuses anything but flags.

    def validated_run() -> None:
        config = experiment.validate(
            FLAGS.config, FLAGS.strategy, FLAGS.worker_hosts, FLAGS.task_index, FLAGS.mode not in ("export", "predict")
        )
        run(config, FLAGS.config.to_dict())

    command_line.run_with_exit_statuses(validated_run, FLAGS.strategy)


def cli() -> None:
    """The console script's entry point (setup.py)."""
    app.run(main, flags_parser=command_line.parse_flags)


if __name__ == "__main__":
    cli()
