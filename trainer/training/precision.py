"""Mixed precision: the Keras policy layers are built under, and the loss scaling float16 needs.

The only place that knows what each `train.precision` means. Layers take
their compute dtype from the global policy when they are built, so the policy
is set before any model is; float16 gradients of an unscaled loss would
underflow, so under `mixed_float16` the optimizer is wrapped in a dynamic
`LossScaleOptimizer`, and the steps ask the optimizer, not the config,
whether to scale.

bfloat16 is fast only where the hardware computes in it: CPUs with AVX-512
BF16 or AMX, Ampere and later GPUs. Elsewhere the matmuls are emulated and run
slower than float32 (7.1 against 9.7 examples/s on an AVX2-only AMD EPYC,
BENCHMARKS.md), so the run says so at its start.
"""

from collections.abc import Callable

from absl import logging
import tensorflow as tf
import tf_keras

_LOSS_SCALED = "mixed_float16"
_BFLOAT16 = "mixed_bfloat16"
# /proc/cpuinfo flags of x86 CPUs that multiply in bfloat16.
_CPU_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_GPU_BFLOAT16_CAPABILITY = (8, 0)


def set_policy(precision: str) -> None:
    """Layers built from now on compute in `precision`'s dtype (variables stay float32)."""
    if precision == _BFLOAT16:
        slow = _devices_without_bfloat16()
        if slow:
            logging.warning(
                "--config.train.precision=mixed_bfloat16, but this run computes on %s: without bfloat16 "
                "arithmetic the matmuls are emulated and slower than in float32. Use "
                "--config.train.precision=float32 here (or mixed_float16 on GPUs).",
                slow,
            )
    tf_keras.mixed_precision.set_global_policy(precision)


def cpu_has_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU's flags include bfloat16 arithmetic; None where the flags cannot be read."""
    try:
        with open(cpuinfo_path) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool(_CPU_BFLOAT16_FLAGS & set(flags))


def _devices_without_bfloat16() -> str:
    """The devices the run computes on that lack bfloat16 arithmetic, described; empty when none does."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "a CPU without AVX-512 BF16 or AMX" if cpu_has_bfloat16() is False else ""
    capabilities = {gpu.name: tf.config.experimental.get_device_details(gpu).get("compute_capability") for gpu in gpus}
    # GPUs that report no capability (not CUDA) are given the benefit of the doubt.
    old = [name for name, capability in capabilities.items() if capability and capability < _GPU_BFLOAT16_CAPABILITY]
    return f"GPUs older than Ampere ({', '.join(old)})" if old else ""


def wrap_optimizer(optimizer: tf_keras.optimizers.Optimizer, precision: str) -> tf_keras.optimizers.Optimizer:
    """`optimizer`, with dynamic loss scaling where the precision needs it.

    The LossScaleOptimizer skips steps whose gradients overflow and lowers the
    scale; the step counter still advances.
    """
    if precision == _LOSS_SCALED:
        return tf_keras.mixed_precision.LossScaleOptimizer(optimizer, dynamic=True)
    return optimizer


def is_loss_scaled(optimizer: tf_keras.optimizers.Optimizer) -> bool:
    return isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer)


def loss_scaler(optimizer: tf_keras.optimizers.Optimizer) -> Callable[[tf.Tensor], tf.Tensor]:
    """The function a step applies to its loss before taking gradients."""
    return optimizer.get_scaled_loss if is_loss_scaled(optimizer) else tf.identity
