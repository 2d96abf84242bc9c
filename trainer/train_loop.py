"""The distributed train/eval loop with checkpoints and TensorBoard summaries.

A custom loop over `strategy.run` rather than `Model.fit`: it controls where
gradients are all-reduced and clipped, resumes at the exact batch after a
restart, and runs several steps per tf.function call.
"""

import json
import os
import time

from absl import logging
import ml_collections
import tensorflow as tf

from trainer import optimization
from trainer import strategy as strategy_lib
from trainer.config import ConfigError
from trainer.data import pipeline
from trainer.data.sources import Examples
from trainer.task import ClassificationTask

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


def write_json_atomically(path: str, payload: dict) -> None:
    """Writes to a temporary name, then renames: readers never see a torn file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Trainer:
    """Owns the model, optimizer, metrics and checkpoint of one run in `model_dir`."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        task: ClassificationTask,
        strategy: tf.distribute.Strategy,
        model_dir: str,
        train_size: int = 0,
    ):
        self.config = config
        self.task = task
        self.strategy = strategy
        self.model_dir = model_dir
        self.is_chief = strategy_lib.is_chief(strategy)
        train = config.train
        self.global_batch_size = train.batch_size
        self.steps_per_epoch = pipeline.steps_per_epoch(train_size, train.batch_size) if train_size else 0
        self.total_steps = train.steps or train.epochs * self.steps_per_epoch
        with strategy.scope():
            self.model = task.build_model()
            self.optimizer = optimization.create_optimizer(
                train.learning_rate, max(self.total_steps, 1), train.warmup_fraction, train.weight_decay
            )
            self.optimizer.build(self.model.trainable_variables)
            self.train_metrics = task.build_metrics()
            self.eval_metrics = task.build_metrics()
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.checkpoint_manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(model_dir, CHECKPOINT_DIR),
            max_to_keep=train.keep_checkpoints,
            step_counter=self.optimizer.iterations,
        )
        self.tokenizer = task.build_tokenizer()
        self._train_writer = self._summary_writer("train")
        self._eval_writers: dict[str, tf.summary.SummaryWriter] = {}
        self._train_loop_fn = self._make_train_loop()
        self._eval_step_fn = self._make_eval_step()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _summary_writer(self, name: str) -> tf.summary.SummaryWriter:
        """Summaries of `name` go to model_dir/name; only the chief writes them."""
        if self.is_chief:
            return tf.summary.create_file_writer(os.path.join(self.model_dir, name))
        return tf.summary.create_noop_writer()

    def restore(self) -> int:
        """Restores the latest checkpoint in `model_dir`, if any; returns the step."""
        latest = self.checkpoint_manager.latest_checkpoint
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
                raise ConfigError(
                    f"--model_dir={self.model_dir} holds {latest}, which does not fit the configured model "
                    f"({str(e).splitlines()[0][:300]}). Use a new --model_dir, or the config it was trained "
                    f"with ({CONFIG_FILE} there)."
                ) from e
            logging.info("Restored %s: resuming at step %d.", latest, self.step)
        else:
            logging.info("No checkpoint in %s: starting from step 0.", self.checkpoint_manager.directory)
        return self.step

    # ----- tf.functions -----

    def _make_train_loop(self):
        task, model, optimizer = self.task, self.model, self.optimizer
        metrics = self.train_metrics
        global_batch_size, clip_norm = self.global_batch_size, self.config.train.clip_norm

        def step_fn(features, labels):
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                per_example_loss = task.per_example_loss(labels, logits)
                # Scaled by the global batch: summing over replicas gives the mean.
                loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
            variables = model.trainable_variables
            # Embedding gradients arrive as IndexedSlices; dense tensors all-reduce efficiently.
            gradients = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
            gradients = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
            optimizer.apply_gradients(zip(gradients, variables), skip_gradients_aggregation=True)
            task.update_metrics(metrics, labels, logits, per_example_loss)

        @tf.function
        def train_loop(iterator, num_steps):
            for _ in tf.range(num_steps):
                self.strategy.run(step_fn, args=next(iterator))

        return train_loop

    def _make_eval_step(self):
        task, model, metrics = self.task, self.model, self.eval_metrics

        def step_fn(features, labels):
            logits = model(features, training=False)
            task.update_metrics(metrics, labels, logits, task.per_example_loss(labels, logits))

        @tf.function
        def eval_step(inputs):
            self.strategy.run(step_fn, args=inputs)

        return eval_step

    # ----- loops -----

    def train(self, train_examples: Examples, validation_examples: Examples | None) -> dict[str, float]:
        """Trains to `total_steps` from the latest checkpoint; returns final eval metrics."""
        if self.is_chief:
            tf.io.gfile.makedirs(self.model_dir)
            write_json_atomically(os.path.join(self.model_dir, CONFIG_FILE), self.config.to_dict())
        start_step = self.restore()
        if start_step >= self.total_steps:
            logging.info("Checkpoint is at step %d of %d: training is complete.", start_step, self.total_steps)
        else:
            self._train_from(start_step, train_examples, validation_examples)
        self._save_checkpoint()
        if validation_examples is None:
            return {}
        return self.evaluate(validation_examples, "validation")

    def _train_from(self, start_step: int, train_examples: Examples, validation_examples: Examples | None) -> None:
        config = self.config.train
        eval_every = config.eval_every_steps or self.steps_per_epoch
        logging.info(
            "Training steps %d..%d (%d per epoch), global batch %d = %d per replica x %d replicas.",
            start_step,
            self.total_steps,
            self.steps_per_epoch,
            self.global_batch_size,
            self.global_batch_size // self.strategy.num_replicas_in_sync,
            self.strategy.num_replicas_in_sync,
        )
        dataset = self.strategy.distribute_datasets_from_function(
            pipeline.train_dataset_fn(
                train_examples, self.tokenizer, self.global_batch_size, self.config.seed, start_step
            )
        )
        iterator = iter(dataset)
        step = start_step
        window_start, window_step, run_start = time.time(), step, time.time()
        # The final checkpoint and evaluation are done by train(), not here.
        periodic = {"log": config.log_every_steps, "checkpoint": config.checkpoint_every_steps}
        if validation_examples is not None and eval_every:
            periodic["eval"] = eval_every
        while step < self.total_steps:
            boundary = min([self.total_steps] + [_next_multiple(step, every) for every in periodic.values()])
            num_steps = min(config.steps_per_loop, boundary - step)
            self._train_loop_fn(iterator, tf.constant(num_steps))
            step += num_steps
            due = {name for name, every in periodic.items() if step % every == 0}
            if "log" in due or step == self.total_steps:
                elapsed = time.time() - window_start
                examples_per_second = (step - window_step) * self.global_batch_size / max(elapsed, 1e-9)
                self._log_train(step, examples_per_second, time.time() - run_start, start_step)
            if step < self.total_steps:
                if "checkpoint" in due:
                    self._save_checkpoint()
                if "eval" in due:
                    self.evaluate(validation_examples, "validation")
            if due:
                # examples/s counts training time only.
                window_start, window_step = time.time(), step

    def _log_train(self, step: int, examples_per_second: float, elapsed: float, start_step: int) -> None:
        results = {name: float(metric.result()) for name, metric in self.train_metrics.items()}
        learning_rate = float(tf.convert_to_tensor(self.optimizer.learning_rate))
        steps_done = step - start_step
        eta = elapsed / steps_done * (self.total_steps - step)
        logging.info(
            "step %d/%d (%.1f%%)  loss %.4f  accuracy %.4f  lr %.3g  %.1f examples/s  ETA %s",
            step,
            self.total_steps,
            100.0 * step / self.total_steps,
            results["loss"],
            results["accuracy"],
            learning_rate,
            examples_per_second,
            _format_duration(eta),
        )
        with self._train_writer.as_default(step=step):
            for name, value in results.items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("examples_per_second", examples_per_second)
        self._train_writer.flush()
        for metric in self.train_metrics.values():
            metric.reset_state()

    def _save_checkpoint(self) -> None:
        # Every worker must take part in saving; the manager knows which one writes.
        path = self.checkpoint_manager.save(checkpoint_number=self.step)
        logging.info("Saved checkpoint %s.", path)

    def evaluate(self, examples: Examples, split_name: str) -> dict[str, float]:
        """Evaluates on `examples`; writes eval summaries at the current step."""
        for metric in self.eval_metrics.values():
            metric.reset_state()
        eval_batch_size = self.config.eval.batch_size
        dataset = self.strategy.distribute_datasets_from_function(
            pipeline.eval_dataset_fn(examples, self.tokenizer, eval_batch_size)
        )
        num_batches = -(-len(examples) // eval_batch_size)
        start = time.time()
        for batch_index, inputs in enumerate(dataset, start=1):
            self._eval_step_fn(inputs)
            if batch_index % 50 == 0:
                logging.info("eval %s: batch %d/%d", split_name, batch_index, num_batches)
        results = {name: float(metric.result()) for name, metric in self.eval_metrics.items()}
        logging.info(
            "eval %s at step %d: %s (%.1f examples/s)",
            split_name,
            self.step,
            "  ".join(f"{k} {v:.4f}" for k, v in results.items()),
            len(examples) / max(time.time() - start, 1e-9),
        )
        # Validation curves in model_dir/eval; other splits (test) in eval_<split>.
        run_name = "eval" if split_name == "validation" else f"eval_{split_name}"
        if run_name not in self._eval_writers:
            self._eval_writers[run_name] = self._summary_writer(run_name)
        writer = self._eval_writers[run_name]
        with writer.as_default(step=self.step):
            for name, value in results.items():
                tf.summary.scalar(name, value)
        writer.flush()
        return {**results, "num_examples": len(examples)}

    def write_results(self, metrics: dict[str, dict[str, float]]) -> None:
        """Adds final metrics of each split to metrics.json (chief only).

        Splits not in `metrics` keep their earlier results, so --mode=evaluate
        on the test split leaves the validation results in place.
        """
        if not self.is_chief:
            return
        path = os.path.join(self.model_dir, METRICS_FILE)
        previous = {}
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                previous = json.load(f)
        write_json_atomically(path, {**previous, **metrics, "step": self.step})


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every
