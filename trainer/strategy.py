"""Builds the tf.distribute strategy named by --strategy."""

import json
import os
import socket
import sys
import threading

from absl import logging
import tensorflow as tf

STRATEGIES = ("mirrored", "multi_worker_mirrored", "one_device", "default")
# Exit status of a worker that could not reach its peers in time.
UNREACHABLE_EXIT_CODE = 4
_COMMUNICATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def set_tf_config(worker_hosts: str, task_index: int) -> None:
    """Builds TF_CONFIG for a cluster of workers from --worker_hosts and --task_index."""
    workers = [host.strip() for host in worker_hosts.split(",") if host.strip()]
    if not 0 <= task_index < len(workers):
        raise ValueError(f"--task_index={task_index} is not an index into --worker_hosts ({len(workers)} hosts).")
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task_index}}
    )


def _cluster_addresses() -> tuple[list[str], str]:
    """Every address of TF_CONFIG's cluster, and this task's own."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task", {})
    own = cluster.get(task.get("type"), [None] * (task.get("index", 0) + 1))[task.get("index", 0)]
    return [address for addresses in cluster.values() for address in addresses], own


def _unreachable(addresses: list[str]) -> list[str]:
    unreachable = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except (OSError, ValueError):
            unreachable.append(address)
    return unreachable


def _multi_worker_mirrored(communication: str, connect_timeout: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over TF_CONFIG's cluster, failing fast on unreachable peers.

    Creating the strategy blocks until every worker has joined the cluster; a
    watchdog thread ends the process after `connect_timeout` seconds, naming
    the peers it cannot connect to, rather than letting it hang.
    """
    addresses, own = _cluster_addresses()
    joined = threading.Event()

    def watchdog():
        if joined.wait(connect_timeout):
            return
        peers = [a for a in addresses if a != own]
        missing = _unreachable(peers) or peers
        logging.error(
            "Worker %s could not join the cluster within %g s (--config.distribute.connect_timeout_seconds): "
            "no connection to %s. Check that every worker is started with the same TF_CONFIG cluster and "
            "that these addresses are reachable.",
            own,
            connect_timeout,
            ", ".join(missing),
        )
        logging.flush()
        sys.stderr.flush()
        os._exit(UNREACHABLE_EXIT_CODE)  # The main thread is blocked inside TensorFlow.

    threading.Thread(target=watchdog, name="cluster-connect-watchdog", daemon=True).start()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=_COMMUNICATIONS[communication]
        )
    )
    joined.set()
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
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(
                [d.name for d in gpus], cross_device_ops=tf.distribute.NcclAllReduce()
            )
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        logging.warning("No GPU visible: MirroredStrategy falls back to %d CPU device(s) %s.", len(cpus), cpus)
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker_mirrored":
        if not os.environ.get("TF_CONFIG"):
            logging.warning("No TF_CONFIG (or --worker_hosts): MultiWorkerMirroredStrategy runs as a single worker.")
        return _multi_worker_mirrored(communication, connect_timeout)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"--strategy={name!r}: expected one of {', '.join(STRATEGIES)}.")


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """This worker's task index in the cluster (0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes summaries, metrics and exports (false on non-chief workers)."""
    return strategy.extended.should_save_summary
