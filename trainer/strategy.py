"""Builds the tf.distribute strategy named by --strategy."""

from collections.abc import Callable
import json
import os
import subprocess
import sys

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.config import DistributeConfig
from trainer.errors import RetryableError, UserError

STRATEGIES = ("mirrored", "multi_worker_mirrored", "one_device", "default")
_COMMUNICATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


class PeerLostError(RetryableError):
    """A collective failed because a peer worker went away; the job should be restarted."""


def set_tf_config(worker_hosts: str, task_index: int) -> None:
    """Builds TF_CONFIG for a cluster of workers from --worker_hosts and --task_index."""
    workers = [host.strip() for host in worker_hosts.split(",") if host.strip()]
    if not 0 <= task_index < len(workers):
        raise UserError(f"--task_index={task_index} is not an index into --worker_hosts ({len(workers)} hosts).")
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task_index}}
    )


# Runs beside a joining worker. TensorFlow blocks inside C++ holding the GIL while it
# waits for its peers, so no Python thread of the worker could act on a timeout.
_JOIN_WATCHDOG = r"""
import os, select, signal, socket, sys
parent, timeout, own, peers = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
if select.select([sys.stdin], [], [], timeout)[0]:
    sys.exit(0)  # The worker joined (or died): its end of the pipe closed.
def reachable(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False
missing = [peer for peer in peers if not reachable(peer)] or peers
sys.stderr.write(
    f"FATAL worker {own} could not join its cluster within {timeout:g} s "
    f"(--config.distribute.connect_timeout_seconds): no connection to {', '.join(missing)}. Check that every "
    "worker is started with the same TF_CONFIG cluster and that these addresses are reachable.\n"
)
sys.stderr.flush()
os.kill(parent, signal.SIGKILL)
"""


def _multi_worker_mirrored(communication: str, connect_timeout: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over TF_CONFIG's cluster, failing fast on unreachable peers.

    Creating the strategy waits until every worker is up. A watchdog process
    ends this one after `connect_timeout` seconds, naming the peers it cannot
    connect to, rather than letting it hang.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    addresses = [address for job in ("chief", "worker") for address in cluster.get(job, [])]
    own = cluster.get(task.get("type"), [None] * (task.get("index", 0) + 1))[task.get("index", 0)]
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _JOIN_WATCHDOG, str(os.getpid()), str(connect_timeout), str(own)]
        + [a for a in addresses if a != own],
        stdin=subprocess.PIPE,
    )
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=_COMMUNICATIONS[communication]
            )
        )
    finally:
        watchdog.stdin.close()
        watchdog.wait()
    resolver = strategy.cluster_resolver
    logging.info(
        "Cluster %s; this is %s %s (%s); %d replica(s) in sync, %s all-reduce.",
        json.dumps(resolver.cluster_spec().as_dict()),
        resolver.task_type,
        resolver.task_id,
        "chief" if is_chief(strategy) else "not chief",
        strategy.num_replicas_in_sync,
        communication,
    )
    return strategy


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


def create_strategy(name: str, communication: str = "auto", connect_timeout: float = 120) -> tf.distribute.Strategy:
    """Returns the strategy for --strategy=`name`.

    `multi_worker_mirrored` reads the cluster from TF_CONFIG (see set_tf_config);
    `communication` picks its cross-worker all-reduce.

    `mirrored` uses every visible GPU with NCCL all-reduce; without a GPU it
    falls back to all logical CPU devices, reducing on one of them: NCCL has
    no CPU kernel, and hierarchical copy assumes an even device count (with
    an odd one it leaves a replica's gradients out).
    """
    if name == "multi_worker_mirrored":
        # First, before anything lists devices: collectives must be configured before
        # TensorFlow initialises its runtime.
        if not os.environ.get("TF_CONFIG"):
            logging.warning("No TF_CONFIG (or --worker_hosts): MultiWorkerMirroredStrategy runs as a single worker.")
        return _multi_worker_mirrored(communication, connect_timeout)
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


def from_flags(
    name: str,
    distribute: DistributeConfig,
    worker_hosts: str | None = None,
    task_index: int | None = None,
    num_cpu_devices: int = 1,
) -> tf.distribute.Strategy:
    """The strategy of --strategy, with --worker_hosts/--task_index (a cluster without TF_CONFIG) and
    --num_cpu_devices (logical CPUs for MirroredStrategy without GPUs) applied first."""
    if worker_hosts is not None or task_index is not None:
        if name != "multi_worker_mirrored" or worker_hosts is None or task_index is None:
            raise UserError("--worker_hosts and --task_index go together, with --strategy=multi_worker_mirrored.")
        set_tf_config(worker_hosts, task_index)
    split_cpu(num_cpu_devices)
    return create_strategy(name, distribute.communication, distribute.connect_timeout_seconds)


def as_peer_loss(error: Exception, strategy_name: str) -> PeerLostError | None:
    """A collective's failure under multi_worker_mirrored as the loss of a peer (not this worker's fault:
    a status launchers retry); None for anything else."""
    if strategy_name != "multi_worker_mirrored" or not isinstance(
        error, (tf.errors.UnavailableError, tf.errors.AbortedError)
    ):
        return None
    return PeerLostError(f"Lost contact with a peer worker ({' '.join(str(error.message).split())[:400]}).")


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """This worker's task index in the cluster (0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes in the strategy's cluster (1 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, [])) for job in ("chief", "worker"))


def compute_in_shares(
    strategy: tf.distribute.Strategy, total: int, compute: Callable[[int, int], np.ndarray]
) -> np.ndarray:
    """`compute(start, stop)` over range(total), each worker computing only its own share.

    Rows are cut into one contiguous share per replica; a worker computes its
    replicas' shares and an all-gather hands every worker all `total` values, in
    order. `compute` returns int32 values, one per row.
    """
    workers = num_workers(strategy)
    if workers == 1:
        return compute(0, total)
    local = strategy.num_replicas_in_sync // workers
    per_replica = -(-total // strategy.num_replicas_in_sync)
    first = worker_id(strategy) * local * per_replica
    block = np.zeros(local * per_replica, np.int32)
    start, stop = min(first, total), min(first + local * per_replica, total)
    block[: stop - start] = compute(start, stop)

    def share(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        offset = (context.replica_id_in_sync_group % local) * per_replica
        return tf.constant(block[offset : offset + per_replica])

    gathered = strategy.gather(strategy.experimental_distribute_values_from_function(share), axis=0)
    return gathered.numpy()[:total]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes summaries, metrics and exports (false on non-chief workers)."""
    return strategy.extended.should_save_summary
