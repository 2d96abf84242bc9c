"""The distributed training loop: timing, checkpoints, the NaN policy and SIGTERM, at step boundaries.

A custom loop over the compiled steps (trainer/training/steps.py) rather than
`Model.fit`: it follows the input plan's batches (length buckets, exact
resume, any number of workers), runs several steps per tf.function call, and
handles NaN losses and preemption at step boundaries that every worker agrees
on. It names no metric of the task: progress lines and summaries show what
the task aggregates.
"""

from collections.abc import Iterator
import contextlib
import hashlib
import signal
import time

from absl import logging
import tensorflow as tf
import tf_keras

from trainer import strategy as strategy_lib
from trainer.config import DistributeConfig, TrainConfig
from trainer.data import batching
from trainer.data.examples import Examples
from trainer.data.input_plan import InputPlan
from trainer.errors import DivergedError, ReadError, RetryableError
from trainer.run_dir import TRAIN_SUMMARIES, RunDirectory
from trainer.schema import ConfigError
from trainer.tasks.base import Task
from trainer.training import optimization, precision, steps
from trainer.training.averaging import WeightAverages
from trainer.training.checkpointing import Checkpoints
from trainer.training.evaluation import Evaluator
from trainer.training.profiling import StepProfiler
from trainer.training.selection import ModelSelection


class TrainingDivergedError(DivergedError):
    """The loss became NaN/Inf and the NaN policy says stop (or its skips are used up)."""


class PreemptedError(RetryableError):
    """SIGTERM arrived; a checkpoint was saved and the run should be restarted."""


def _format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Trainer:
    """Trains a task's model to the configured step; owns its optimizer, training metrics and checkpoints."""

    def __init__(
        self,
        config: TrainConfig,
        distribute: DistributeConfig,
        task: Task,
        model: tf_keras.Model,
        strategy: tf.distribute.Strategy,
        input_plan: InputPlan,
        run_dir: RunDirectory,
        steps_per_epoch: int = 0,
        evaluator: Evaluator | None = None,
        profile_steps: tuple[int, int] | None = None,
    ):
        self.config = config
        self.allow_replica_count_change = distribute.allow_replica_count_change
        self.task, self.model, self.strategy = task, model, strategy
        self.input_plan, self.run_dir, self.evaluator = input_plan, run_dir, evaluator
        self.num_replicas = strategy.num_replicas_in_sync
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = config.steps or config.epochs * steps_per_epoch
        learning_rate = optimization.scaled_learning_rate(
            config.learning_rate, distribute.lr_scaling, self.num_replicas
        )
        with strategy.scope():
            optimizer = optimization.create_optimizer(
                learning_rate, max(self.total_steps, 1), config.warmup_fraction, config.weight_decay
            )
            if config.layer_decay < 1:
                depths = task.encoder.layer_depths(model.trainable_variables)
                optimizer.set_rate_multipliers([(v, config.layer_decay**depth) for v, depth in depths])
                logging.info(
                    "Layer-wise learning-rate decay %g over %d encoder variables: x%.3g at the top block, "
                    "x%.3g for the embeddings.",
                    config.layer_decay,
                    len(depths),
                    config.layer_decay,
                    config.layer_decay ** max((d for _, d in depths), default=0),
                )
            self.optimizer = precision.wrap_optimizer(optimizer, config.precision)
            self.optimizer.build(model.trainable_variables)
            self.metrics = task.build_metrics()
            # Saved with the weights: how many replicas trained them, and which batches
            # of the plan were skipped for a NaN loss (-1 = free slot).
            self._saved_replicas = tf.Variable(self.num_replicas, trainable=False, name="num_replicas")
            self._skipped_variable = tf.Variable(
                [-1] * max(config.max_nan_skips, 1), dtype=tf.int64, trainable=False, name="skipped_batches"
            )
            self.averages = WeightAverages(model, config.ema_decay) if config.ema_decay else None
        self.selection = ModelSelection(config, task.lower_is_better, model, strategy, run_dir)
        # Only what this config uses: checkpoints of runs without it restore as before.
        tracked = {"averages": self.averages} if self.averages is not None else {}
        if self.selection.enabled:
            tracked.update(self.selection.variables())
        self.skipped_positions: list[int] = []
        self.checkpoints = Checkpoints(
            tf.train.Checkpoint(
                model=model,
                optimizer=self.optimizer,
                num_replicas=self._saved_replicas,
                skipped_batches=self._skipped_variable,
                **tracked,
            ),
            run_dir.path,
            config.keep_checkpoints,
            self.optimizer.iterations,
            run_dir.is_chief,
            strategy_lib.worker_id(strategy),
            strategy_lib.num_workers(strategy),
        )
        self.jit_compile = steps.resolve_jit_compile(config.jit_compile)
        self.step_functions = steps.build_train_step(
            task,
            model,
            self.optimizer,
            self.metrics,
            strategy,
            config.batch_size,
            config.clip_norm,
            self.jit_compile,
            self.averages,
            tf.dtypes.as_dtype(distribute.allreduce_dtype),
            distribute.bytes_per_pack,
        )
        self.profiler = StepProfiler(profile_steps, run_dir.summaries_path(TRAIN_SUMMARIES), run_dir.is_chief)
        self._stop_requested = False
        # The last validation's step and results.
        self._validated: tuple[int, dict] | None = None

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> str | None:
        """Restores the latest readable checkpoint of the run, if any; returns its path."""
        path = self.checkpoints.restore()
        if path is None:
            logging.info("No checkpoint in %s: starting from step 0.", self.checkpoints.directory)
            return None
        saved_replicas = int(self._saved_replicas.numpy())
        if saved_replicas != self.num_replicas:
            if not self.allow_replica_count_change:
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
                self.config.batch_size,
                self.config.batch_size // self.num_replicas,
            )
            self._saved_replicas.assign(self.num_replicas)
        self.skipped_positions = sorted(int(p) for p in self._skipped_variable.numpy() if p >= 0)
        logging.info("Restored %s: resuming at step %d.", path, self.step)
        return path

    def disk_needed_bytes(self) -> int:
        """Room the run's checkpoints and export need: weights plus two Adam slots per kept
        checkpoint (one more being written), plus the weights again for the export."""
        weight_bytes = sum(v.shape.num_elements() * 4 for v in self.model.variables)
        return weight_bytes * 3 * (self.config.keep_checkpoints + 1) + weight_bytes

    def compilations(self) -> dict[str, int]:
        """How many times the train and eval steps were traced (= XLA-compiled when jit_compile)."""
        evaluated = self.evaluator.step_functions.compilations() if self.evaluator else 0
        return {"train": self.step_functions.compilations(), "eval": evaluated}

    def weights_digest(self) -> str:
        """SHA-256 over the model's variables, in a fixed order."""
        digest = hashlib.sha256()
        for variable in self.model.variables:
            digest.update(variable.name.encode())
            digest.update(variable.numpy().tobytes())
        return digest.hexdigest()[:16]

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The model holds its averaged weights inside the block (with train.ema_decay; else as it is)."""
        if self.averages is None:
            yield
            return
        with self.averages.swapped_in():
            yield

    def validate(self, examples: Examples, step: int) -> dict:
        """Evaluates the validation split (with the averaged weights, if any) and keeps the best checkpoint;
        a step already evaluated (training stopped early right after) is not evaluated twice."""
        if self._validated is not None and self._validated[0] == step:
            return self._validated[1]
        with self.averaged():
            results = self.evaluator.evaluate(examples, "validation", step)
            self.selection.observe(step, results)
        self._validated = step, results
        return results

    def train(self, examples: Examples, validation: Examples | None) -> None:
        """Trains from the current step (see `restore`) to the last, then saves a checkpoint."""
        self.checkpoints.remove_leftovers()
        if self.selection.should_stop:
            logging.info("Training stopped early at step %d (early stopping): not resumed.", self.step)
        elif self.step >= self.total_steps:
            logging.info("Checkpoint is at step %d of %d: training is complete.", self.step, self.total_steps)
        else:
            previous_handler = signal.signal(signal.SIGTERM, self._request_stop)
            try:
                while not self._train_from(self.step, examples, validation):
                    pass
            finally:
                self.profiler.stop()
                signal.signal(signal.SIGTERM, previous_handler)
        self._save_checkpoint()
        # Every worker logs it: equal digests prove the replicas hold identical weights.
        logging.info("Weights digest at step %d: %s", self.step, self.weights_digest())

    def _request_stop(self, signum, frame) -> None:
        del frame
        logging.warning("Received signal %d: saving a checkpoint at the next step boundary, then exiting.", signum)
        self._stop_requested = True

    def _train_from(self, start_step: int, examples: Examples, validation: Examples | None) -> bool:
        """Trains from `start_step`; returns False if it rolled back to a checkpoint and must go again."""
        config = self.config
        eval_every = config.eval_every_steps or self.steps_per_epoch
        logging.info(
            "Training steps %d..%d (%s), global batch %d = %d per replica x %d replicas, "
            "precision %s, XLA %s, buckets %s.",
            start_step,
            self.total_steps,
            f"{self.steps_per_epoch} per epoch" if self.steps_per_epoch else "a stream",
            config.batch_size,
            config.batch_size // self.num_replicas,
            self.num_replicas,
            config.precision,
            "on" if self.jit_compile else "off",
            self.input_plan.buckets.tolist(),
        )
        if start_step == 0 and not self.checkpoints.candidates():
            # A rollback target for the NaN policy, and proof the directory takes a checkpoint.
            self._save_checkpoint()
        batches = self.input_plan.training_batches(
            examples, config.batch_size, start_step, self.total_steps, self.skipped_positions
        )
        step = start_step
        window_start, window_step, run_start = time.time(), step, time.time()
        # The final checkpoint and evaluation are done by the caller, not here.
        periodic = {"log": config.log_every_steps, "checkpoint": config.checkpoint_every_steps}
        if validation is not None and self.evaluator is not None and eval_every and config.eval_during_training:
            periodic["eval"] = eval_every
        while step < self.total_steps:
            # The next multiple of each period, and the profiler's window.
            marks = [(step // every + 1) * every for every in periodic.values()] + self.profiler.boundaries()
            boundary = min([self.total_steps] + [mark for mark in marks if mark > step])
            self.profiler.at_step(step)
            num_steps, seq_length = batches.next_run(step - start_step, min(config.steps_per_loop, boundary - step))
            traces = self.step_functions.compilations()
            try:
                first_diverged, stop = self.step_functions.run(
                    batches.iterator, tf.constant(num_steps), seq_length, tf.constant(float(self._stop_requested))
                )
            except tf.errors.OpError as e:
                self._stop_on_read_error(examples, e)
                raise
            if self.step_functions.compilations() > traces:
                logging.info(
                    "Compiled the train step for length %s (%s; %d compilation(s) so far).",
                    seq_length or "any",
                    "XLA" if self.jit_compile else "graph",
                    self.step_functions.compilations(),
                )
            first_diverged = int(first_diverged)
            if first_diverged >= 0:
                self._handle_divergence(step + first_diverged)
                return False
            step += num_steps
            if precision.is_loss_scaled(self.optimizer) and self._loss_scale_collapsed(step):
                self._handle_divergence(step - 1)
                return False
            if bool(stop):
                self._save_checkpoint()
                raise PreemptedError(f"Stopped at step {step} on request (SIGTERM); checkpoint saved.")
            due = {name for name, every in periodic.items() if step % every == 0}
            if "log" in due or step == self.total_steps:
                elapsed = time.time() - window_start
                examples_per_second = (step - window_step) * config.batch_size / max(elapsed, 1e-9)
                self._log_train(step, examples_per_second, time.time() - run_start, start_step)
            if step < self.total_steps:
                if "checkpoint" in due:
                    self._save_checkpoint()
                if "eval" in due:
                    self.validate(validation, step)
                    if self.selection.should_stop:
                        break
            if due:
                # examples/s counts training time only.
                window_start, window_step = time.time(), step
        logging.info(
            "Compilations after training: %s (buckets %s).", self.compilations(), self.input_plan.buckets.tolist()
        )
        return True

    def _stop_on_read_error(self, examples: Examples, error: tf.errors.OpError) -> None:
        """A streamed shard failed mid-run: save what was trained (one worker; a cluster's peers are stuck in
        the step's collective and keep their last checkpoint) and stop naming the shard."""
        reason = self.input_plan.read_error(examples, error)
        if reason is None:
            return
        saved = "the last checkpoint is kept"
        if strategy_lib.num_workers(self.strategy) == 1:
            self._save_checkpoint()
            saved = f"saved a checkpoint at step {self.step}"
        raise ReadError(f"{reason} Stopped and {saved}: repair or remove the shard and rerun to resume.") from None

    def _handle_divergence(self, step: int) -> None:
        """A step's loss or gradients were NaN/Inf: stop, or roll back and skip its batch."""
        candidates = self.checkpoints.candidates()
        last_good = candidates[0] if candidates else "none"
        config = self.config
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
        for metric in self.metrics.values():
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
        results = self.task.aggregate(self.metrics)
        learning_rate = float(tf.convert_to_tensor(self.optimizer.learning_rate))
        eta = elapsed / (step - start_step) * (self.total_steps - step)
        logging.info(
            "step %d/%d (%.1f%%)  %s  lr %.3g  %.1f examples/s  ETA %s",
            step,
            self.total_steps,
            100.0 * step / self.total_steps,
            "  ".join(f"{name} {results[name]:.4f}" for name in self.task.progress_metrics),
            learning_rate,
            examples_per_second,
            _format_duration(eta),
        )
        scalars = {**results, "learning_rate": learning_rate, "examples_per_second": examples_per_second}
        if self.steps_per_epoch:
            scalars["epoch"] = step / self.steps_per_epoch
        self.run_dir.write_scalars(TRAIN_SUMMARIES, step, scalars)
        for metric in self.metrics.values():
            metric.reset_state()

    def _save_checkpoint(self) -> None:
        logging.info("Saved checkpoint %s.", self.checkpoints.save(self.step))
