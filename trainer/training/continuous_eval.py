"""--mode=continuous_eval: a process beside a training job that evaluates each checkpoint it writes.

Like Keras's SidecarEvaluator and Model Garden's continuous_eval mode: it
follows model_dir/checkpoints with TensorFlow's `checkpoints_iterator`, takes
no lock (the trainer holds it), and skips a checkpoint that the trainer's
keep-K rotation removes while it is read. It writes eval/ (and eval_test/)
summaries and, with train.best_metric, the best checkpoint in best/, and at
the final step exports the best model to export/ (the trainer, run with
--mode=train, exports its last step to export_last/).
"""

from absl import logging
import tensorflow as tf
import tf_keras

from trainer.data.examples import Examples
from trainer.serving import export as export_lib
from trainer.tasks.base import Task
from trainer.training.averaging import WeightAverages
from trainer.training.checkpointing import CheckpointError, restore_model
from trainer.training.evaluation import Evaluator
from trainer.training.selection import ModelSelection


def evaluate_checkpoints(
    task: Task,
    model: tf_keras.Model,
    evaluator: Evaluator,
    selection: ModelSelection,
    averages: WeightAverages | None,
    validation: Examples | None,
    test: Examples | None,
    final_step: int,
    timeout_seconds: int,
) -> None:
    """Evaluates each new checkpoint until the one of `final_step`, or `timeout_seconds` without one."""
    run_dir = evaluator.run_dir
    selection.resume(run_dir.read_best())
    logging.info("Watching %s for checkpoints up to step %d.", run_dir.checkpoints, final_step)
    results: dict = {}
    for path in tf.train.checkpoints_iterator(run_dir.checkpoints, timeout=timeout_seconds):
        try:
            step = restore_model(model, run_dir.path, path, **({"averages": averages} if averages else {}))
        except CheckpointError as e:
            logging.warning("Skipping %s: %s", path, e)
            continue
        if averages is not None:
            averages.apply()
        if validation is not None:
            results["validation"] = evaluator.evaluate(validation, "validation", step)
            selection.observe(step, results["validation"])
        if test is not None:
            results["test"] = evaluator.evaluate(test, "test", step)
        if step >= final_step:
            logging.info("Evaluated the final step, %d.", step)
            _finish(task, model, selection, results, step)
            return
    logging.info("No new checkpoint for %d s (--eval_timeout_seconds): done.", timeout_seconds)


def _finish(task: Task, model: tf_keras.Model, selection: ModelSelection, results: dict, step: int) -> None:
    """Exports the best model to export/ and records the final results and the best in metrics.json."""
    run_dir = selection.run_dir
    best_step = int(selection.best_step.numpy())
    fields = {"step": step}
    if selection.enabled and best_step >= 0:
        restore_model(model, run_dir.path, "best")
        if run_dir.is_chief:
            export_lib.export(task, task.build_tokenizer(), model, run_dir.export, best_step)
        results["best"] = run_dir.read_best()
        fields["exported_step"] = best_step
    run_dir.write_metrics(results, **fields)
