r"""One worker with 2 threads against 2 workers with 1 thread each (pinned): examples/s and all-reduce share.

    python benchmarks/multi_worker_bench.py --archive=../shared/data/aclImdb_train.tar.gz

Every layout runs the same `trainer.main` job (the offline MiniLM at
--seq_length, global batch 32, --precision) for --warmup_steps + --timed_steps
steps on the first --max_examples reviews:
  1. `--strategy=mirrored` in one process, 2 intra-op threads, pinned to cores 0-1;
  2. compute alone: two independent 1-thread processes at once, pinned to core 0
     and core 1, each training on 16 examples a step (the 2-worker step's work,
     under the same contention for memory, without any all-reduce);
  3. `launch/local_cluster.sh 2 --threads_per_worker 1 --pin` with
     `--strategy=multi_worker_mirrored` (RING collectives over loopback gRPC), once
     for each gradient wire dtype in --allreduce_dtypes and pack size in
     --bytes_per_pack (`distribute.allreduce_dtype`, `distribute.bytes_per_pack`).
Throughput is the median of the chief's per-step `examples_per_second`
TensorBoard scalar after warm-up. The all-reduce share of a 2-worker step is
what the all-reduce adds to it: (step - compute-alone step) / step. Beside it,
the bare all-reduce: two pinned 1-thread workers all-reduce, as the train step
does, tensors of the shapes of the model's trainable variables (read from
layout 1's checkpoint) in the variant's dtype and packs, timed alone. Prints a
markdown table.
"""

from collections.abc import Sequence
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("archive", "../shared/data/aclImdb_train.tar.gz", "aclImdb archive or directory (data.path).")
flags.DEFINE_integer("max_examples", 2048, "data.max_examples: reviews loaded.")
flags.DEFINE_integer("seq_length", 128, "data.seq_length.")
flags.DEFINE_string("precision", "mixed_bfloat16", "train.precision.")
flags.DEFINE_integer("warmup_steps", 5, "Leading steps left out.")
flags.DEFINE_integer("timed_steps", 25, "Timed steps.")
flags.DEFINE_integer("allreduce_repeats", 10, "Timed all-reduce calls (after 3 warm-up calls).")
flags.DEFINE_list("config_overrides", [], "Extra trainer.main flags for every layout, e.g. --config.model.bert...")
flags.DEFINE_list("allreduce_dtypes", ["float32", "bfloat16"], "2-worker variants: gradient wire dtypes.")
flags.DEFINE_list("bytes_per_pack", ["0", "4194304"], "2-worker variants: all-reduce pack sizes (0: one pack).")
flags.DEFINE_string("allreduce_shapes", None, "Internal: JSON file of shapes; runs one all-reduce worker.")
flags.DEFINE_string("allreduce_dtype", "float32", "Internal: the all-reduce worker's wire dtype.")
flags.DEFINE_integer("allreduce_pack", 0, "Internal: the all-reduce worker's bytes per pack.")
FLAGS = flags.FLAGS


_BATCH = 32


def _trainer_flags(model_dir: str, batch_size: int = _BATCH) -> list[str]:
    steps = FLAGS.warmup_steps + FLAGS.timed_steps
    return [
        f"--model_dir={model_dir}",
        f"--config.train.batch_size={batch_size}",
        "--mode=train",
        f"--config.data.path={FLAGS.archive}",
        f"--config.data.max_examples={FLAGS.max_examples}",
        f"--config.data.seq_length={FLAGS.seq_length}",
        "--config.data.validation_fraction=0",
        f"--config.train.precision={FLAGS.precision}",
        f"--config.train.steps={steps}",
        f"--config.train.checkpoint_every_steps={steps}",
        "--config.train.log_every_steps=1",
        *FLAGS.config_overrides,
    ]


def _median_rate(model_dir: str) -> float:
    """Median examples/s of the chief's steps after warm-up, from its TensorBoard events."""
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(os.path.join(model_dir, "train"), size_guidance={"tensors": 0})
    events.Reload()
    import tensorflow as tf

    rates = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("examples_per_second")}
    timed = [rate for step, rate in rates.items() if step > FLAGS.warmup_steps]
    if len(timed) < FLAGS.timed_steps // 2:
        raise RuntimeError(f"only {len(timed)} timed steps in {model_dir}")
    return statistics.median(timed)


def _run(command: list[str], env: dict[str, str], log_path: str) -> None:
    logging.info("Running %s (log %s)", " ".join(command), log_path)
    with open(log_path, "w") as log:
        status = subprocess.run(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if status:
        raise RuntimeError(f"exit {status}: {' '.join(command)}; see {log_path}")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_on_cores(name: str, work: str, commands: list[list[str]], envs: list[dict], timeout: float | None) -> None:
    """Runs commands[i] pinned to core i, all at once, logging to work/<name>-<i>.log; raises on a failure."""
    with contextlib.ExitStack() as stack:
        processes = []
        for core, (command, env) in enumerate(zip(commands, envs, strict=True)):
            log = stack.enter_context(open(os.path.join(work, f"{name}-{core}.log"), "w"))
            pinned = ["taskset", "-c", str(core), *command]
            processes.append(subprocess.Popen(pinned, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        for core, process in enumerate(processes):
            if process.wait(timeout=timeout):
                raise RuntimeError(f"{name} process {core} failed; see {work}/{name}-{core}.log")


def _allreduce_seconds(shapes_path: str, work: str, dtype: str, bytes_per_pack: int) -> float:
    """Median seconds of one all-reduce of the model's gradients between two pinned 1-thread workers."""
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    name = f"allreduce-{dtype}-{bytes_per_pack}"
    command = [sys.executable, os.path.abspath(__file__), f"--allreduce_shapes={shapes_path}"]
    command += [f"--allreduce_repeats={FLAGS.allreduce_repeats}"]
    command += [f"--allreduce_dtype={dtype}", f"--allreduce_pack={bytes_per_pack}"]
    envs = [
        dict(
            os.environ,
            TF_NUM_INTRAOP_THREADS="1",
            TF_NUM_INTEROP_THREADS="1",
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_CONFIG=json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}),
        )
        for index in range(2)
    ]
    _run_on_cores(name, work, [command, command], envs, timeout=600)
    with open(os.path.join(work, f"{name}-0.log")) as log:
        lines = [line for line in log if line.startswith("{")]
    return json.loads(lines[-1])["median_seconds"]


def _allreduce_worker() -> None:
    import tensorflow as tf

    from trainer.training import steps

    with open(FLAGS.allreduce_shapes) as f:
        shapes = json.load(f)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
    )
    with strategy.scope():
        tensors = [tf.Variable(tf.ones(shape)) for shape in shapes]
    options = tf.distribute.experimental.CommunicationOptions(bytes_per_pack=FLAGS.allreduce_pack)
    wire_dtype = tf.dtypes.as_dtype(FLAGS.allreduce_dtype)

    @tf.function
    def all_reduce():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return steps.all_reduce_gradients(context, [tf.identity(t) for t in tensors], wire_dtype, options)

        return strategy.run(replica_fn)

    for _ in range(3):
        all_reduce()
    seconds = []
    for _ in range(FLAGS.allreduce_repeats):
        start = time.perf_counter()
        all_reduce()  # Returns once every reduced tensor is computed.
        seconds.append(time.perf_counter() - start)
    values = sum(int(tf.reduce_prod(s)) for s in shapes)
    print(json.dumps({"median_seconds": statistics.median(seconds), "values": values}), flush=True)


def _compute_alone_rate(work: str) -> float:
    """examples/s of two independent 1-thread processes (cores 0 and 1) training 16 examples a step each."""
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    model_dirs = [os.path.join(work, f"compute_alone_{core}") for core in range(2)]
    trainer = [sys.executable, "-m", "trainer.main", "--strategy=mirrored"]
    commands = [trainer + _trainer_flags(model_dir, _BATCH // 2) for model_dir in model_dirs]
    _run_on_cores("compute_alone", work, commands, [env, env], timeout=None)
    # Each did half of a 2-worker step's work; their slower one sets the pace.
    return 2 * min(_median_rate(model_dir) for model_dir in model_dirs)


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.allreduce_shapes:
        _allreduce_worker()
        return
    work = tempfile.mkdtemp(prefix="multi-worker-bench-")
    logging.info("Work directory %s", work)
    single_dir = os.path.join(work, "one_worker")
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="2", TF_NUM_INTEROP_THREADS="2", TF_CPP_MIN_LOG_LEVEL="2")
    single = ["taskset", "-c", "0,1", sys.executable, "-m", "trainer.main", "--strategy=mirrored"]
    _run(single + _trainer_flags(single_dir), env, os.path.join(work, "one_worker.log"))
    single_rate = _median_rate(single_dir)
    compute_rate = _compute_alone_rate(work)

    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(single_dir, "checkpoints")))
    shapes = [
        shape
        for name, shape in sorted(reader.get_variable_to_shape_map().items())
        if name.startswith("model/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE") and "OPTIMIZER_SLOT" not in name
    ]
    shapes_path = os.path.join(work, "shapes.json")
    with open(shapes_path, "w") as f:
        json.dump(shapes, f)
    values = sum(int(tf.reduce_prod(s)) for s in shapes)

    compute_step = _BATCH / compute_rate
    rows = [
        f"| 1 worker x 2 threads (MirroredStrategy, cores 0-1) | {single_rate:.1f} | {_BATCH / single_rate:.2f} s "
        "| none | none (1 replica) | 0% | 1.00x |",
        f"| 2 independent 1-thread processes, 16 examples a step each (compute alone) | {compute_rate:.1f} "
        f"| {compute_step:.2f} s | none | none | 0% | {compute_rate / single_rate:.2f}x |",
    ]
    for dtype in FLAGS.allreduce_dtypes:
        for bytes_per_pack in map(int, FLAGS.bytes_per_pack):
            name = f"two_workers-{dtype}-{bytes_per_pack}"
            cluster_dir = os.path.join(work, name)
            cluster = ["bash", "launch/local_cluster.sh", "2", "--threads_per_worker", "1", "--pin"]
            cluster += ["--log_dir", os.path.join(work, f"{name}_logs")]  # The launcher sets the strategy.
            variant = [
                f"--config.distribute.allreduce_dtype={dtype}",
                f"--config.distribute.bytes_per_pack={bytes_per_pack}",
            ]
            _run(cluster + _trainer_flags(cluster_dir) + variant, dict(os.environ), os.path.join(work, f"{name}.log"))
            rate = _median_rate(cluster_dir)
            step = _BATCH / rate
            bare = _allreduce_seconds(shapes_path, work, dtype, bytes_per_pack)
            packs = f"packs of {bytes_per_pack / 2**20:g} MiB" if bytes_per_pack else "one pack"
            rows.append(
                f"| 2 workers x 1 thread (MultiWorkerMirroredStrategy, RING), {dtype}, {packs} | {rate:.1f} "
                f"| {step:.2f} s | {bare * 1000:.0f} ms | {(step - compute_step) * 1000:.0f} ms "
                f"| {100 * (step - compute_step) / step:.0f}% | {rate / single_rate:.2f}x |"
            )
    print(
        f"\nMiniLM-L6-H384, seq_length {FLAGS.seq_length}, global batch {_BATCH}, {FLAGS.precision}, "
        f"median of {FLAGS.timed_steps} steps after {FLAGS.warmup_steps}; {values / 1e6:.1f} M gradient values\n\n"
        "| layout | examples/s | step time | bare all-reduce | all-reduce added to the step | all-reduce share "
        "| vs 1 worker |\n| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + f"\n\nLogs: {work}"
    )


if __name__ == "__main__":
    app.run(main)
