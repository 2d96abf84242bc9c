"""Builds the tf.distribute strategy named by --strategy."""

from absl import logging
import tensorflow as tf

STRATEGIES = ("mirrored", "one_device", "default")


def split_cpu(num_devices: int) -> None:
    """Splits the host CPU into `num_devices` logical devices.

    Lets MirroredStrategy run over several replicas on a machine without
    accelerators (tests, debugging). Must run before TensorFlow initialises
    its devices.
    """
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def create_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy for --strategy=`name`.

    `mirrored` uses every visible GPU with NCCL all-reduce; without a GPU it
    falls back to all logical CPU devices, reducing on one of them: NCCL has
    no CPU kernel, and hierarchical copy assumes an even device count (with
    an odd one it leaves a replica's gradients out).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(
                [d.name for d in gpus], cross_device_ops=tf.distribute.NcclAllReduce()
            )
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        logging.warning("No GPU visible: MirroredStrategy falls back to %d CPU device(s) %s.", len(cpus), cpus)
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"--strategy={name!r}: expected one of {', '.join(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes summaries, metrics and exports (false on non-chief workers)."""
    return strategy.extended.should_save_summary
