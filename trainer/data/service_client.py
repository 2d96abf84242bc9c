"""The tf.data service from the trainer's side: the dispatcher's address, a check that it answers, and
`distribute`, which sends an input pipeline's dataset through it.

The trainer builds its per-pipeline dataset (records -> tokenized batches) as
usual; with `--config.data.service_address` set, `distribute` hands it to a
tf.data service dispatcher, whose workers run the dataset graph and stream the
finished batches back. The servers are trainer/data/service.py.
"""

from collections.abc import Iterator
import ipaddress
import re
import time
import uuid

from absl import logging
import grpc
import tensorflow as tf

from trainer import errors

FLAG = "--config.data.service_address"

# How the service processes one job (one training input pipeline's dataset).
#
# DYNAMIC: the dispatcher hands out the dataset's source elements (here: the
# pipeline's shard files, epoch after epoch) one split at a time to whichever
# service worker asks, and the job's single consumer receives every batch
# exactly once. With one service worker the splits are taken, processed and
# returned in order, so the batches equal the local pipeline's in content and
# order, resume skip included (tests/test_data_service.py compares them).
#
# This does not shard the trainer's data a second time: the strategy's
# InputContext already gave each training input pipeline its own files (or
# records), each pipeline is its own job (see `distribute`), and all that a
# job's workers produce goes to that one pipeline. The sharding that would drop
# data, a job shared by several consumers, is what the job names rule out.
#
# Why not OFF ("parallel_epochs"): every service worker would then produce the
# whole dataset, so a second worker (started by mistake, or a restarted one,
# which begins again from the start) makes the trainer read records twice,
# interleaved: silently wrong training. DYNAMIC never repeats a batch; a
# restarted worker can lose the batches it held ("at most once"). The static
# policies (FILE, DATA, ...) need a fixed worker list and readers co-located
# with the workers.
#
# With more than one service worker each runs the pipeline over the files it is
# handed: batches come in the order workers finish them, and a resumed run's
# skip of the consumed batches happens on each worker. Exact, reproducible and
# exactly resumed runs therefore use one service worker per job.
PROCESSING_MODE = tf.data.experimental.service.ShardingPolicy.DYNAMIC

SCHEME = "grpc://"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
DISPATCHER_RPC = "/tensorflow.data.DispatcherService/"

# --- addresses ---------------------------------------------------------------------------------


def split_host_port(host_port: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `[ipv6]:port`, or None when it is not one."""
    host, colon, port = host_port.rpartition(":")
    if not colon or not re.fullmatch(r"\d{1,5}", port) or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return host, int(port)
    return (host, int(port)) if HOSTNAME.match(host) else None


def normalize_address(address: str, flag: str = FLAG) -> str:
    """`grpc://HOST:PORT` for a dispatcher address given as `grpc://HOST:PORT` or `HOST:PORT`.

    Raises UserError naming `flag` for anything else: another scheme, a missing
    or invalid port, a path, spaces. HOST is a name, an IPv4 address or an IPv6
    address in brackets.
    """
    text = address.strip() if isinstance(address, str) else ""
    expected = "expected grpc://HOST:PORT or HOST:PORT, e.g. grpc://10.0.0.5:5050"
    if not text:
        raise errors.UserError(f"{flag} is empty; {expected}.")
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "grpc":
        raise errors.UserError(
            f"{flag}={address}: the tf.data service speaks grpc:// only, not {scheme}://; {expected}."
        )
    parsed = split_host_port(rest if sep else text)
    if parsed is None:
        raise errors.UserError(f"{flag}={address} is not a dispatcher address; {expected} (port 1-65535).")
    host, port = parsed
    return f"{SCHEME}{host}:{port}"


def check_address(address: str) -> None:
    """Raises UserError naming --config.data.service_address unless `address` is a dispatcher address."""
    normalize_address(address)


def host_port(address: str, flag: str = FLAG) -> str:
    """`HOST:PORT` of a dispatcher address, as WorkerConfig and gRPC channels take it."""
    return normalize_address(address, flag)[len(SCHEME) :]


# --- reachability ------------------------------------------------------------------------------


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialized protobuf message: enough to read two replies."""

    def varint(position: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[position]
            value |= (byte & 0x7F) << shift
            position += 1
            if byte < 0x80:
                return value, position
            shift += 7

    position = 0
    while position < len(data):
        key, position = varint(position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = varint(position)
        elif wire_type == 2:
            size, position = varint(position)
            value, position = data[position : position + size], position + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, position = data[position : position + size], position + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
        yield number, value


def _worker_addresses(reply: bytes) -> list[str]:
    """Worker addresses in a GetWorkersResponse (`repeated WorkerInfo workers = 1`, `string address = 1`)."""
    addresses = []
    for number, info in _protobuf_fields(reply):
        if number == 1 and isinstance(info, bytes):
            addresses += [value.decode() for field, value in _protobuf_fields(info) if field == 1]
    return sorted(addresses)


def check_dispatcher(address: str, timeout_seconds: float = 30.0, min_workers: int = 1) -> list[str]:
    """Waits up to `timeout_seconds` for the dispatcher at `address` to answer with at least `min_workers`
    registered workers; returns their addresses. Raises UserError naming the address otherwise.

    Asks the dispatcher itself over gRPC (its GetVersion and GetWorkers calls), so
    an open port that is not a dispatcher (a worker's, say) is told apart. Run it
    once at start: a trainer reading from a dispatcher that is not there, or has
    no workers, would otherwise wait without end.
    """
    target = normalize_address(address)
    where = f"{FLAG}={target}"
    deadline = time.monotonic() + timeout_seconds
    with grpc.insecure_channel(target[len(SCHEME) :]) as channel:

        def call(method: str, least_seconds: float = 0.001) -> bytes:
            rpc = channel.unary_unary(DISPATCHER_RPC + method)  # No (de)serializers: bytes in, bytes out.
            try:
                # wait_for_ready: keep trying to connect (a dispatcher still starting) until the deadline.
                timeout = max(deadline - time.monotonic(), least_seconds)
                return rpc(b"", timeout=timeout, wait_for_ready=True)
            except grpc.RpcError as e:
                code = e.code() if callable(getattr(e, "code", None)) else None
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    raise errors.UserError(
                        f"{where}: something answers there, but not a tf.data service dispatcher (a worker's "
                        "address?). Give the address of `python -m trainer.data.service --role=dispatcher`."
                    ) from None
                if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise errors.UserError(
                        f"{where}: no tf.data service dispatcher answered within {timeout_seconds:g} s. Is "
                        "`python -m trainer.data.service --role=dispatcher` (or launch/data_service.sh) running "
                        "there, and is the port reachable from this machine?"
                    ) from None
                details = e.details() if callable(getattr(e, "details", None)) else e
                raise errors.UserError(f"{where}: the dispatcher failed to answer ({code}: {details}).") from None

        call("GetVersion")
        while True:
            # It has answered: a late GetWorkers call still gets a few seconds.
            workers = _worker_addresses(call("GetWorkers", least_seconds=5.0))
            if len(workers) >= min_workers:
                break
            if time.monotonic() >= deadline:
                raise errors.UserError(
                    f"{where}: the dispatcher answers but has {len(workers)} worker(s) after {timeout_seconds:g} s "
                    f"(needs {min_workers}). Start one: python -m trainer.data.service --role=worker "
                    f"--dispatcher={target[len(SCHEME) :]}"
                )
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
    logging.info("tf.data service dispatcher %s answers; workers: %s.", target, ", ".join(workers) or "none")
    if len(workers) > 1:
        logging.warning(
            "The tf.data service at %s has %d workers: each batch still arrives once, but in the order the "
            "workers finish them, and a resumed run skips its consumed batches on each worker (exact, "
            "reproducible runs need one worker).",
            target,
            len(workers),
        )
    return workers


# --- the input pipeline ------------------------------------------------------------------------


def pipeline_job_name(context: tf.distribute.InputContext, prefix: str = "train") -> str:
    """A readable job name for one training input pipeline, e.g. `train-pipeline-1-of-2`."""
    return f"{prefix}-pipeline-{context.input_pipeline_id}-of-{context.num_input_pipelines}"


def distribute(dataset: tf.data.Dataset, address: str, job_name: str) -> tf.data.Dataset:
    """`dataset`'s elements, computed by the tf.data service at `address` instead of in this process.

    With one service worker the elements equal the local dataset's, in order.
    The dataset must be splittable by its source (`from_tensor_slices`, `range`,
    files), use only ops registered in the servers (they import tensorflow_text)
    and no Python code (`py_function`, `from_generator`), which a server in
    another process cannot run.

    `job_name` labels the job (use `pipeline_job_name`); a random suffix makes
    each call its own job. Job names are global to the dispatcher and outlive a
    run (journalled in fault-tolerant mode), and a consumer that names an
    existing job joins it, whatever dataset it brought. Hence a fixed name would
    let two training workers split one stream, hand a restarted run the
    remainder (or, for a finished job, none) of the previous run's stream, and
    feed a rebuilt plan the old one's batches. Iterating the returned dataset
    again starts a fresh pass, as locally.
    """
    if not job_name:
        raise ValueError("distribute: job_name must be a non-empty string.")
    service = normalize_address(address)
    job = f"{job_name}.{uuid.uuid4().hex[:12]}"
    logging.info("Input from the tf.data service at %s, job %s (%s processing).", service, job, PROCESSING_MODE.name)
    return dataset.apply(
        tf.data.experimental.service.distribute(processing_mode=PROCESSING_MODE, service=service, job_name=job)
    )
