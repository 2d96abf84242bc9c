"""The distributed train/eval loop with checkpoints, summaries and fault handling.

A custom loop over `strategy.run` rather than `Model.fit`: it controls where
gradients are all-reduced and clipped, follows a batch plan (length buckets,
exact resume, any number of workers), runs several steps per tf.function
call, and handles NaN losses and preemption at step boundaries that every
worker agrees on.
"""

import hashlib
import json
import os
import signal
import time

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from trainer import optimization
from trainer import strategy as strategy_lib
from trainer.checkpointing import Checkpoints
from trainer.config import ConfigError
from trainer.data import batching, pipeline
from trainer.data.sources import Examples
from trainer.task import ClassificationTask, roc_curve, summarize

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf and the NaN policy says stop (or its skips are used up)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the last complete one is named."""


class PreemptedError(Exception):
    """SIGTERM arrived; a checkpoint was saved and the run should be restarted."""


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


def resolve_jit_compile(setting: str) -> bool:
    """`auto` compiles with XLA on GPUs only: on CPUs it measured slower (BENCHMARKS.md)."""
    if setting == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    return setting == "true"


class Trainer:
    """Owns the model, optimizer, metrics and checkpoints of one run in `model_dir`."""

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
        self.num_replicas = strategy.num_replicas_in_sync
        self.steps_per_epoch = batching.steps_per_epoch(train_size, train.batch_size) if train_size else 0
        self.total_steps = train.steps or train.epochs * self.steps_per_epoch
        self.jit_compile = resolve_jit_compile(train.jit_compile)
        self.buckets = batching.bucket_lengths(config.data.seq_length, config.data.num_buckets)
        learning_rate = train.learning_rate
        if config.distribute.lr_scaling == "linear":
            learning_rate *= self.num_replicas
            logging.info(
                "Peak learning rate %g x %d replicas = %g (distribute.lr_scaling=linear).",
                train.learning_rate,
                self.num_replicas,
                learning_rate,
            )
        else:
            logging.info(
                "Peak learning rate %g for %d replicas (distribute.lr_scaling=none).", learning_rate, self.num_replicas
            )
        with strategy.scope():
            self.model = task.build_model()
            self.optimizer = optimization.create_optimizer(
                learning_rate, max(self.total_steps, 1), train.warmup_fraction, train.weight_decay, train.precision
            )
            self.optimizer.build(self.model.trainable_variables)
            self.train_metrics = task.build_metrics()
            self.eval_metrics = task.build_metrics(evaluation=True)
            # Saved with the weights: how many replicas trained them, and which batches
            # of the plan were skipped for a NaN loss (-1 = free slot).
            self._saved_replicas = tf.Variable(self.num_replicas, trainable=False, name="num_replicas")
            self._skipped_variable = tf.Variable(
                [-1] * max(train.max_nan_skips, 1), dtype=tf.int64, trainable=False, name="skipped_batches"
            )
        self.skipped_positions: list[int] = []
        self.checkpoints = Checkpoints(
            tf.train.Checkpoint(
                model=self.model,
                optimizer=self.optimizer,
                num_replicas=self._saved_replicas,
                skipped_batches=self._skipped_variable,
            ),
            model_dir,
            train.keep_checkpoints,
            self.optimizer.iterations,
            self.is_chief,
            strategy_lib.worker_id(strategy),
            strategy_lib.num_workers(strategy),
        )
        self.tokenizer = task.build_tokenizer()
        # Created on first use, so nothing is written to model_dir before main checks it.
        self._summary_writers: dict[str, tf.summary.SummaryWriter] = {}
        self._forward_backward, self._train_fn = self._make_train_function()
        self._logits_fn, self._eval_fn = self._make_eval_function()
        self._stop_requested = False
        # Token lengths per evaluated split, computed once.
        self._eval_lengths: dict[str, np.ndarray] = {}

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _summary_writer(self, name: str) -> tf.summary.SummaryWriter:
        """Summaries of `name` go to model_dir/name; only the chief writes them."""
        if name not in self._summary_writers:
            self._summary_writers[name] = (
                tf.summary.create_file_writer(os.path.join(self.model_dir, name))
                if self.is_chief
                else tf.summary.create_noop_writer()
            )
        return self._summary_writers[name]

    def restore(self) -> str | None:
        """Restores the latest readable checkpoint in `model_dir`, if any; returns its path."""
        path = self.checkpoints.restore()
        if path is None:
            logging.info("No checkpoint in %s: starting from step 0.", self.checkpoints.directory)
            return None
        saved_replicas = int(self._saved_replicas.numpy())
        if saved_replicas != self.num_replicas:
            if not self.config.distribute.allow_replica_count_change:
                raise ConfigError(
                    f"{path} was trained with {saved_replicas} replicas, this job has {self.num_replicas}, and "
                    "--config.distribute.allow_replica_count_change=false forbids resuming it. Restart with "
                    f"{saved_replicas} replicas or allow the change."
                )
            logging.info(
                "Resuming %s with %d replicas instead of %d: the global batch stays %d (%d per replica).",
                path,
                self.num_replicas,
                saved_replicas,
                self.global_batch_size,
                self.global_batch_size // self.num_replicas,
            )
            self._saved_replicas.assign(self.num_replicas)
        self.skipped_positions = sorted(int(p) for p in self._skipped_variable.numpy() if p >= 0)
        logging.info("Restored %s: resuming at step %d.", path, self.step)
        return path

    def compilations(self) -> dict[str, int]:
        """How many times the train and eval steps were traced (= XLA-compiled when jit_compile)."""
        return {
            "train": self._forward_backward.experimental_get_tracing_count(),
            "eval": self._logits_fn.experimental_get_tracing_count(),
        }

    # ----- tf.functions -----

    def _make_train_function(self):
        task, model, optimizer, strategy = self.task, self.model, self.optimizer, self.strategy
        metrics, global_batch_size = self.train_metrics, self.global_batch_size
        clip_norm, loss_scaled = self.config.train.clip_norm, self.config.train.precision == "mixed_float16"

        @tf.function(jit_compile=self.jit_compile)
        def forward_backward(features, labels, weights):
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                per_example_loss = task.per_example_loss(labels, logits) * weights
                # Scaled by the global batch: summing over replicas gives the mean.
                loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
                scaled_loss = optimizer.get_scaled_loss(loss) if loss_scaled else loss
            # Embedding gradients arrive as IndexedSlices; dense tensors all-reduce efficiently.
            gradients = [tf.convert_to_tensor(g) for g in tape.gradient(scaled_loss, model.trainable_variables)]
            return loss, logits, per_example_loss, gradients

        def step_fn(features, labels, weights, seq_length, stop_requested):
            features = {key: tf.ensure_shape(value, [None, seq_length]) for key, value in features.items()}
            loss, logits, per_example_loss, gradients = forward_backward(features, labels, weights)
            # The loss and the stop flag ride along with the gradients: one collective, and
            # every worker sees the same global values, so all take the same decisions.
            reduced = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [*gradients, loss, stop_requested * tf.ones([])]
            )
            gradients, global_loss, stops = reduced[:-2], reduced[-2], reduced[-1]
            if loss_scaled:
                gradients = optimizer.get_unscaled_gradients(gradients)
            gradients, global_norm = tf.clip_by_global_norm(gradients, clip_norm)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables), skip_gradients_aggregation=True)
            task.update_metrics(metrics, labels, logits, per_example_loss, weights)
            diverged = ~tf.math.is_finite(global_loss)
            if not loss_scaled:  # Under loss scaling, overflowing gradients are skipped by design.
                diverged |= ~tf.math.is_finite(global_norm)
            return diverged, stops > 0

        @tf.function
        def train_fn(iterator, num_steps, seq_length: int, stop_requested):
            """Runs `num_steps` steps; returns the offset of the first diverged step (-1: none)
            and whether any worker asked to stop."""
            first_diverged, stop = tf.constant(-1), tf.constant(False)
            for i in tf.range(num_steps):
                features, labels, weights = next(iterator)
                outputs = strategy.run(step_fn, args=(features, labels, weights, seq_length, stop_requested))
                diverged, stop = (strategy.experimental_local_results(value)[0] for value in outputs)
                first_diverged = tf.where((first_diverged < 0) & diverged, i, first_diverged)
            return first_diverged, stop

        return forward_backward, train_fn

    def _make_eval_function(self):
        task, model, metrics, strategy = self.task, self.model, self.eval_metrics, self.strategy

        @tf.function(jit_compile=self.jit_compile)
        def logits_fn(features):
            return model(features, training=False)

        def step_fn(features, labels, weights):
            logits = logits_fn(features)
            task.update_metrics(metrics, labels, logits, task.per_example_loss(labels, logits), weights)

        @tf.function
        def eval_fn(inputs):
            strategy.run(step_fn, args=inputs)

        return logits_fn, eval_fn

    # ----- training -----

    def train(self, train_examples: Examples, validation_examples: Examples | None) -> dict[str, float]:
        """Trains to `total_steps` from the latest checkpoint; returns final eval metrics."""
        if self.is_chief:
            tf.io.gfile.makedirs(self.model_dir)
            write_json_atomically(os.path.join(self.model_dir, CONFIG_FILE), self.config.to_dict())
        self.restore()
        if self.step >= self.total_steps:
            logging.info("Checkpoint is at step %d of %d: training is complete.", self.step, self.total_steps)
        else:
            lengths = self._token_lengths(train_examples)
            previous_handler = signal.signal(signal.SIGTERM, self._request_stop)
            try:
                while not self._train_from(self.step, train_examples, lengths, validation_examples):
                    pass
            finally:
                signal.signal(signal.SIGTERM, previous_handler)
        self._save_checkpoint()
        # Every worker logs it: equal digests prove the replicas hold identical weights.
        logging.info("Weights digest at step %d: %s", self.step, self.weights_digest())
        if validation_examples is None:
            return {}
        return self.evaluate(validation_examples, "validation")

    def weights_digest(self) -> str:
        """SHA-256 over the model's variables, in a fixed order."""
        digest = hashlib.sha256()
        for variable in self.model.variables:
            digest.update(variable.name.encode())
            digest.update(variable.numpy().tobytes())
        return digest.hexdigest()[:16]

    def _request_stop(self, signum, frame) -> None:
        del frame
        logging.warning("Received signal %d: saving a checkpoint at the next step boundary, then exiting.", signum)
        self._stop_requested = True

    def _token_lengths(self, examples: Examples) -> np.ndarray:
        if len(self.buckets) == 1:
            return np.full(len(examples), self.buckets[0], np.int32)
        began = time.time()
        # Each worker tokenizes its own share; all receive every length, for the same plan.
        lengths = strategy_lib.compute_in_shares(
            self.strategy,
            len(examples),
            lambda start, stop: pipeline.token_lengths(examples.texts[start:stop], self.tokenizer),
        )
        counts = np.bincount(np.searchsorted(self.buckets, lengths), minlength=len(self.buckets))
        logging.info(
            "Length buckets %s hold %s examples (token counts of %d examples in %.1f s).",
            self.buckets.tolist(),
            counts.tolist(),
            len(examples),
            time.time() - began,
        )
        return lengths

    def _plan(self, start_step: int, token_lengths: np.ndarray) -> batching.BatchPlan:
        return batching.train_plan(
            token_lengths,
            self.global_batch_size,
            self.config.seed,
            self.buckets,
            start_step,
            self.total_steps,
            self.config.train.steps_per_loop,
            self.skipped_positions,
        )

    def _train_from(
        self, start_step: int, examples: Examples, token_lengths: np.ndarray, validation: Examples | None
    ) -> bool:
        """Trains from `start_step`; returns False if it rolled back to a checkpoint and must go again."""
        config = self.config.train
        eval_every = config.eval_every_steps or self.steps_per_epoch
        logging.info(
            "Training steps %d..%d (%d per epoch), global batch %d = %d per replica x %d replicas, "
            "precision %s, XLA %s, buckets %s.",
            start_step,
            self.total_steps,
            self.steps_per_epoch,
            self.global_batch_size,
            self.global_batch_size // self.num_replicas,
            self.num_replicas,
            config.precision,
            "on" if self.jit_compile else "off",
            self.buckets.tolist(),
        )
        if start_step == 0 and not self.checkpoints.candidates():
            # A rollback target for the NaN policy, and proof the directory takes a checkpoint.
            self._save_checkpoint()
        plan = self._plan(start_step, token_lengths)
        iterator = iter(
            self.strategy.distribute_datasets_from_function(pipeline.dataset_fn(examples, plan, self.tokenizer))
        )
        step = start_step
        window_start, window_step, run_start = time.time(), step, time.time()
        # The final checkpoint and evaluation are done by train(), not here.
        periodic = {"log": config.log_every_steps, "checkpoint": config.checkpoint_every_steps}
        if validation is not None and eval_every:
            periodic["eval"] = eval_every
        while step < self.total_steps:
            boundary = min([self.total_steps] + [_next_multiple(step, every) for every in periodic.values()])
            offset = step - start_step
            num_steps = plan.run_length(offset, min(config.steps_per_loop, boundary - step))
            seq_length = int(plan.lengths[offset])
            traces = self._forward_backward.experimental_get_tracing_count()
            first_diverged, stop = self._train_fn(
                iterator, tf.constant(num_steps), seq_length, tf.constant(float(self._stop_requested))
            )
            if self._forward_backward.experimental_get_tracing_count() > traces:
                logging.info(
                    "Compiled the train step for length %d (%s; %d compilation(s) so far).",
                    seq_length,
                    "XLA" if self.jit_compile else "graph",
                    self._forward_backward.experimental_get_tracing_count(),
                )
            first_diverged = int(first_diverged)
            if first_diverged >= 0:
                self._handle_divergence(step + first_diverged)
                return False
            step += num_steps
            if config.precision == "mixed_float16" and self._loss_scale_collapsed(step):
                self._handle_divergence(step - 1)
                return False
            if bool(stop):
                self._save_checkpoint()
                raise PreemptedError(f"Stopped at step {step} on request (SIGTERM); checkpoint saved.")
            due = {name for name, every in periodic.items() if step % every == 0}
            if "log" in due or step == self.total_steps:
                elapsed = time.time() - window_start
                examples_per_second = (step - window_step) * self.global_batch_size / max(elapsed, 1e-9)
                self._log_train(step, examples_per_second, time.time() - run_start, start_step)
            if step < self.total_steps:
                if "checkpoint" in due:
                    self._save_checkpoint()
                if "eval" in due:
                    self.evaluate(validation, "validation")
            if due:
                # examples/s counts training time only.
                window_start, window_step = time.time(), step
        logging.info("Compilations after training: %s (buckets %s).", self.compilations(), self.buckets.tolist())
        return True

    def _handle_divergence(self, step: int) -> None:
        """A step's loss or gradients were NaN/Inf: stop, or roll back and skip its batch."""
        candidates = self.checkpoints.candidates()
        last_good = candidates[0] if candidates else "none"
        config = self.config.train
        if config.nan_policy == "stop" or len(self.skipped_positions) >= config.max_nan_skips:
            reason = (
                "--config.train.nan_policy=stop"
                if config.nan_policy == "stop"
                else f"the {config.max_nan_skips} skips allowed by --config.train.max_nan_skips are used up"
            )
            raise TrainingDivergedError(
                f"Non-finite loss or gradients at step {step + 1}; {reason}. The last good checkpoint is "
                f"{last_good}. Lower --config.train.learning_rate, check the data, or set "
                "--config.train.nan_policy=skip."
            )
        position = batching.position_of_step(step, self.skipped_positions)
        self.skipped_positions = sorted([*self.skipped_positions, position])
        self.checkpoints.restore()
        self._skipped_variable.assign(
            self.skipped_positions + [-1] * (self._skipped_variable.shape[0] - len(self.skipped_positions))
        )
        logging.warning(
            "Non-finite loss or gradients at step %d: restored %s (step %d) and skipping batch %d of the plan "
            "(%d of %d skips used).",
            step + 1,
            last_good,
            self.step,
            position,
            len(self.skipped_positions),
            config.max_nan_skips,
        )
        for metric in self.train_metrics.values():
            metric.reset_state()

    def _loss_scale_collapsed(self, step: int) -> bool:
        """Under float16, the dynamic loss scale halves at each overflowing step down to a floor of 1,
        where it would stay, skipping every step: reaching the floor means the run has collapsed."""
        loss_scale = float(self.optimizer.loss_scale)
        if loss_scale > 1.0:
            return False
        logging.error(
            "Loss scale fell to its floor of %g by step %d: float16 gradients overflow at almost every step.",
            loss_scale,
            step,
        )
        return True

    def _log_train(self, step: int, examples_per_second: float, elapsed: float, start_step: int) -> None:
        results = summarize(self.train_metrics)
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
        train_writer = self._summary_writer("train")
        with train_writer.as_default(step=step):
            for name, value in results.items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("examples_per_second", examples_per_second)
            if self.steps_per_epoch:
                tf.summary.scalar("epoch", step / self.steps_per_epoch)
        train_writer.flush()
        for metric in self.train_metrics.values():
            metric.reset_state()

    def _save_checkpoint(self) -> None:
        try:
            path = self.checkpoints.save(self.step)
        except (tf.errors.OpError, OSError) as e:
            candidates = self.checkpoints.candidates()
            raise CheckpointWriteError(
                f"Writing the checkpoint of step {self.step} to {self.checkpoints.directory} failed: "
                f"{' '.join(str(getattr(e, 'message', e)).split())[:300]}. The last complete checkpoint is "
                f"{candidates[0] if candidates else 'none'}; fix the cause (free space, permissions) and rerun "
                "the same command to resume from it."
            ) from e
        logging.info("Saved checkpoint %s.", path)

    # ----- evaluation -----

    def evaluate(self, examples: Examples, split_name: str) -> dict:
        """Evaluates on `examples`; writes eval summaries at the current step.

        Returns the scalar metrics plus the confusion matrix at 0.5 and the ROC curve.
        """
        for metric in self.eval_metrics.values():
            metric.reset_state()
        if split_name not in self._eval_lengths:
            self._eval_lengths[split_name] = self._token_lengths(examples)
        plan = batching.eval_plan(self._eval_lengths[split_name], self.config.eval.batch_size, self.buckets)
        dataset = self.strategy.distribute_datasets_from_function(pipeline.dataset_fn(examples, plan, self.tokenizer))
        start = time.time()
        for batch_index, inputs in enumerate(dataset, start=1):
            self._eval_fn(inputs)
            if batch_index % 50 == 0:
                logging.info("eval %s: batch %d/%d", split_name, batch_index, len(plan))
        results = summarize(self.eval_metrics)
        counts = {
            name: int(results.pop(name))
            for name in ("true_positives", "false_positives", "true_negatives", "false_negatives")
        }
        results["num_examples"] = int(results["num_examples"])
        logging.info(
            "eval %s at step %d: %s (%.1f examples/s)",
            split_name,
            self.step,
            "  ".join(f"{k} {v:.4f}" for k, v in results.items() if k != "num_examples"),
            len(examples) / max(time.time() - start, 1e-9),
        )
        # Validation curves in model_dir/eval; other splits (test) in eval_<split>.
        run_name = "eval" if split_name == "validation" else f"eval_{split_name}"
        writer = self._summary_writer(run_name)
        with writer.as_default(step=self.step):
            for name, value in results.items():
                if name != "num_examples":
                    tf.summary.scalar(name, value)
        writer.flush()
        return {
            **results,
            "confusion_matrix": counts,
            "roc_curve": roc_curve(self.eval_metrics["auc"]),
        }

    def write_results(self, metrics: dict[str, dict]) -> None:
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
        write_json_atomically(
            path,
            {
                **previous,
                **metrics,
                "step": self.step,
                "steps_per_epoch": self.steps_per_epoch,
                "examples_trained": self.step * self.global_batch_size,
            },
        )


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every
