"""Builds the tf.distribute strategy named by --strategy."""

from collections.abc import Callable
import json
import os
import re
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


# Jobs of a MultiWorkerMirroredStrategy cluster; an evaluator runs beside it, outside the cluster.
_CLUSTER_JOBS = ("chief", "worker")
_EVALUATOR = "evaluator"


def check_tf_config(raw: str | None) -> dict:
    """TF_CONFIG's contents, checked: valid JSON, a cluster of host:port addresses, a task within it.

    Raises UserError naming the part at fault; no TF_CONFIG gives {} (a single worker).
    """
    if not raw:
        return {}
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e}).") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.get(job) for job in _CLUSTER_JOBS):
        raise UserError('TF_CONFIG has no "cluster" with a "worker" (or "chief") list of host:port addresses.')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise UserError(f'TF_CONFIG cluster "{job}" must be a non-empty list of host:port addresses.')
        for address in addresses:
            _check_address(address, f'TF_CONFIG cluster "{job}"')
    if not isinstance(task, dict) or "type" not in task:
        raise UserError('TF_CONFIG has no "task" with a "type" and an "index".')
    task_type, index = task["type"], task.get("index", 0)
    if task_type == _EVALUATOR:
        return tf_config
    if task_type not in cluster:
        raise UserError(f"TF_CONFIG task type {task_type!r} is not a job of its cluster ({', '.join(cluster)}).")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise UserError(
            f'TF_CONFIG task index {index!r} is not an index into its cluster\'s "{task_type}" list '
            f"({len(cluster[task_type])} addresses)."
        )
    return tf_config


def _check_address(address: object, where: str) -> None:
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{where}: {address!r} is not a host:port address (port 1-65535).")


def set_tf_config(worker_hosts: str, task_index: int) -> None:
    """Builds TF_CONFIG for a cluster of workers from --worker_hosts and --task_index."""
    workers = [host.strip() for host in worker_hosts.split(",") if host.strip()]
    for address in workers:
        _check_address(address, "--worker_hosts")
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
    tf_config = check_tf_config(os.environ.get("TF_CONFIG"))
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    addresses = [address for job in _CLUSTER_JOBS for address in cluster.get(job, [])]
    own = cluster[task["type"]][task.get("index", 0)] if task.get("type") in cluster else None
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


def configure_cluster(name: str, worker_hosts: str | None = None, task_index: int | None = None) -> None:
    """Checks the cluster a --strategy will read: TF_CONFIG, or the one --worker_hosts and
    --task_index build (a cluster without TF_CONFIG). Raises UserError; touches no device."""
    if worker_hosts is not None or task_index is not None:
        if name != "multi_worker_mirrored" or worker_hosts is None or task_index is None:
            raise UserError("--worker_hosts and --task_index go together, with --strategy=multi_worker_mirrored.")
        set_tf_config(worker_hosts, task_index)
    if name == "multi_worker_mirrored":
        check_tf_config(os.environ.get("TF_CONFIG"))


def is_evaluator() -> bool:
    """Whether TF_CONFIG makes this process the cluster's evaluator (a --mode=continuous_eval task)."""
    raw = os.environ.get("TF_CONFIG")
    return bool(raw) and check_tf_config(raw).get("task", {}).get("type") == _EVALUATOR


def from_flags(name: str, distribute: DistributeConfig, num_cpu_devices: int = 1) -> tf.distribute.Strategy:
    """The strategy of --strategy (after `configure_cluster`), with --num_cpu_devices (logical CPUs for
    MirroredStrategy without GPUs) applied first. The cluster's evaluator task joins no collective: it
    gets this machine's devices (mirrored)."""
    split_cpu(num_cpu_devices)
    if name == "multi_worker_mirrored" and is_evaluator():
        logging.info("TF_CONFIG names this task the evaluator: it evaluates on this machine's devices.")
        name = "mirrored"
    return create_strategy(name, distribute.communication, distribute.connect_timeout_seconds)


def as_peer_loss(error: Exception, strategy_name: str) -> PeerLostError | None:
    """A collective's failure under multi_worker_mirrored as the loss of a peer (not this worker's fault:
    a status launchers retry), naming the peer where TensorFlow's message allows; None for anything else.

    TensorFlow's coordination service tracks every worker by heartbeats: a peer that dies or stops
    answering (SIGSTOP, a hung host) is reported within about 10 s as "unhealthy", and when the
    service's own host (the chief) stops answering, its heartbeat RPC runs out of time.
    """
    lost = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)
    if strategy_name != "multi_worker_mirrored" or not isinstance(error, lost):
        return None
    message = " ".join(str(error.message).split())
    cluster = check_tf_config(os.environ.get("TF_CONFIG")).get("cluster", {})
    unhealthy = re.search(r"stopped sending heartbeats\):\s*/job:(\w+)/replica:\d+/task:(\d+)", message)
    if unhealthy:
        job, index = unhealthy.group(1), int(unhealthy.group(2))
        why = "it stopped sending heartbeats (dead, hung or stopped)"
    elif "CoordinationService/Heartbeat" in message:
        job, index = ("chief" if "chief" in cluster else "worker"), 0
        why = "the coordination service on it stopped answering heartbeats (dead, hung or stopped)"
    else:
        return PeerLostError(f"Lost contact with a peer worker ({message[:400]}).")
    address = cluster.get(job, [])[index] if index < len(cluster.get(job, [])) else "address unknown"
    return PeerLostError(f"Lost contact with peer {job} {index} ({address}): {why}.")


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """This worker's place among the cluster's workers, the chief first (0 without a cluster): with a
    "chief" job (Vertex AI's TF_CONFIG), worker i is i + 1; without one, worker i is i."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    index = int(resolver.task_id or 0)
    return index + 1 if has_chief and resolver.task_type == "worker" else index


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
