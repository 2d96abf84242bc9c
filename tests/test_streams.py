"""Streamed sources: formats on TensorFlow's ram:// filesystem, globs, the hash split, sharding over input
pipelines, bucketing, resume by position, and bad shards."""

import csv
import gzip
import io
import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from trainer import experiment
from trainer.data.examples import DataError
from trainer.data.stream_input import StreamInput
from trainer.data.streams import Stream, StreamSource, expand_paths
from trainer.data.tables import Columns
from trainer.tasks import labels as labels_lib
from trainer.tasks import registry as task_registry

from conftest import REPO, check_ok, check_refused, run_trainer, subprocess_env

COLUMNS = Columns("text", "", "label")
WORDS = ["good", "bad", "film", "plot", "the", "and", "great", "boring", "a", "movie"]


def _texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 40))) for _ in range(count)]


def _csv_bytes(rows: list[tuple], header=("text", "label")) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _jsonl_bytes(rows: list[tuple]) -> bytes:
    return "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows).encode()


def _tfrecord_file(path: str, rows: list[tuple], compression: str = "") -> None:
    options = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(path, options) as writer:
        for text, label in rows:
            feature = {
                "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _write(path: str, data: bytes) -> None:
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(gzip.compress(data) if path.endswith(".gz") else data)


def _shards(root: str, num_files: int, per_file: int, suffix: str = ".csv", labels=None) -> dict[str, tuple]:
    """Writes `num_files` shards under `root`; returns {key: (text, label)} of every record."""
    expected = {}
    tf.io.gfile.makedirs(root)
    for index in range(num_files):
        texts = _texts(per_file, seed=index)
        rows = [(text, (labels or [0, 1])[(index + row) % len(labels or [0, 1])]) for row, text in enumerate(texts)]
        name = f"part-{index:02d}{suffix}"
        path = f"{root}/{name}"
        if ".tfrecord" in suffix:
            _tfrecord_file(path, rows, "GZIP" if suffix.endswith(".gz") else "")
        else:
            _write(path, _jsonl_bytes(rows) if ".jsonl" in suffix else _csv_bytes(rows))
        expected.update({f"{name}:{row + 1}": (text, str(label)) for row, (text, label) in enumerate(rows)})
    return expected


def _records(stream: Stream) -> dict[str, tuple]:
    files = tf.data.Dataset.from_tensor_slices(list(stream.files))
    return {
        r["key"].decode(): (r["text"].decode(), r["label"].decode()) for r in stream.records(files).as_numpy_iterator()
    }


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".tfrecord", ".tfrecord.gz"])
def test_every_format_streams_its_records_from_any_filesystem(suffix):
    root = f"ram://formats{suffix.replace('.', '_')}"
    expected = _shards(root, num_files=3, per_file=7, suffix=suffix)
    source = StreamSource.open(f"{root}/part-*{suffix}", "--config.data.path", COLUMNS)
    assert source.files == tuple(f"{root}/part-{i:02d}{suffix}" for i in range(3))
    assert _records(Stream(source, "train")) == expected


def test_paths_are_files_globs_or_lists_and_bad_ones_are_named():
    root = "ram://paths"
    _shards(root, num_files=3, per_file=2)
    listed = expand_paths(f"{root}/part-02.csv, {root}/part-0[01].csv", "--config.data.path")
    assert listed == [f"{root}/part-02.csv", f"{root}/part-00.csv", f"{root}/part-01.csv"]
    with pytest.raises(DataError, match=r"--config.data.path=ram://paths/nothing-\*.csv: the glob matches no file"):
        expand_paths(f"{root}/nothing-*.csv", "--config.data.path")
    with pytest.raises(DataError, match=r"--config.data.path=ram://paths/gone.csv: no such file"):
        expand_paths(f"{root}/part-00.csv,{root}/gone.csv", "--config.data.path")

    _write(f"{root}/other-00.csv", _csv_bytes([("a text", 1)], header=("review", "label")))
    with pytest.raises(DataError, match=r"other-00.csv: no column\(s\) \['text'\] in its header \['review', 'label'\]"):
        StreamSource.open(f"{root}/*.csv", "--config.data.path", COLUMNS)
    _write(f"{root}/mixed.jsonl", _jsonl_bytes([("a text", 1)]))
    with pytest.raises(DataError, match=r"cannot stream csv, jsonl files together"):
        StreamSource.open(f"{root}/part-00.csv,{root}/mixed.jsonl", "--config.data.path", COLUMNS)
    _tfrecord_file(f"{root}/a.tfrecord", [("text", 1)])
    with tf.io.TFRecordWriter(f"{root}/b.tfrecord") as writer:
        feature = {
            "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"text"])),
            "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"pos"])),
        }
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(DataError, match=r"b.tfrecord: its label feature is bytes_list, but .*a.tfrecord's is int64"):
        StreamSource.open(f"{root}/[ab].tfrecord", "--config.data.path", COLUMNS)


def test_the_hash_split_is_disjoint_complete_stable_and_independent_of_file_order():
    root = "ram://split"
    expected = _shards(root, num_files=4, per_file=50)
    source = StreamSource.open(f"{root}/*.csv", "--config.data.path", COLUMNS)
    train, validation = (_records(Stream(source, part, 0.3, part)) for part in ("train", "validation"))
    assert not train.keys() & validation.keys()
    assert {**train, **validation} == expected
    assert 0.2 < len(validation) / len(expected) < 0.4
    reordered = StreamSource.open(",".join(reversed(source.files)), "--config.data.path", COLUMNS)
    assert _records(Stream(reordered, "validation", 0.3, "validation")) == validation


@pytest.fixture(scope="module")
def binary_task(vocab_path):
    from configs import smoke

    values = smoke.get_config().to_dict()
    values["model"]["vocab_path"] = str(vocab_path)
    task = task_registry.build_task(experiment.parse(values))
    task.prepare_labels(None, ("0", "1"), "")
    task.zero_one = True
    return task


def _input(task, num_buckets: int = 1, **kwargs) -> StreamInput:
    return StreamInput(
        tf.distribute.get_strategy(), task.build_tokenizer(), task.label_encoder(), 32, num_buckets, 7, **kwargs
    )


def _context(pipelines: int, index: int) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(
        num_input_pipelines=pipelines, input_pipeline_id=index, num_replicas_in_sync=pipelines
    )


@pytest.mark.parametrize("num_files", [4, 1])
def test_each_input_pipeline_reads_its_own_files_or_records_once(binary_task, num_files):
    root = f"ram://shards{num_files}"
    expected = _shards(root, num_files=num_files, per_file=40 // num_files)
    stream = Stream(StreamSource.open(f"{root}/*.csv", "--config.data.path", COLUMNS), "train")
    stream_input = _input(binary_task)
    keys = [
        [r["key"].decode() for r in stream_input.records(stream, _context(2, i), training=False).as_numpy_iterator()]
        for i in range(2)
    ]
    assert not set(keys[0]) & set(keys[1]) and sorted(keys[0] + keys[1]) == sorted(expected)
    files = [{key.split(":")[0] for key in pipeline} for pipeline in keys]
    if num_files >= 2:
        assert not files[0] & files[1]  # sharded by file
    # Training: the stream repeats each pipeline's own share, shuffled.
    training = stream_input.records(stream, _context(2, 1), training=True).take(3 * len(keys[1]))
    seen = [r["key"].decode() for r in training.as_numpy_iterator()]
    assert set(seen) <= set(keys[1]) and len(set(seen)) > len(keys[1]) // 2 and seen[: len(keys[1])] != keys[1]


def test_a_resumed_stream_gives_the_batches_an_uninterrupted_one_gives_from_there(binary_task):
    root = "ram://resume"
    _shards(root, num_files=3, per_file=30)
    stream = Stream(StreamSource.open(f"{root}/*.csv", "--config.data.path", COLUMNS), "train")
    stream_input = _input(binary_task, num_buckets=4, shuffle_buffer=16)

    def batches(consumed: int, count: int) -> list:
        dataset = stream_input.dataset_fn(stream, 4, training=True, consumed=consumed)(_context(1, 0))
        return list(dataset.take(count).as_numpy_iterator())

    whole, resumed = batches(0, 40), batches(23, 17)
    assert len(resumed) == 17
    for (features, targets, _), (expected_features, expected_targets, _) in zip(resumed, whole[23:]):
        np.testing.assert_array_equal(targets, expected_targets)
        for key in features:
            np.testing.assert_array_equal(features[key], expected_features[key])


def test_batches_are_cut_to_bucket_lengths_without_cutting_tokens(binary_task):
    root = "ram://buckets"
    _shards(root, num_files=2, per_file=60)
    stream = Stream(StreamSource.open(f"{root}/*.csv", "--config.data.path", COLUMNS), "train")
    stream_input = _input(binary_task, num_buckets=4)
    tokenizer = binary_task.build_tokenizer()
    lengths = set()
    for batch in stream_input.dataset_fn(stream, 8, training=False)(_context(1, 0)):
        features, _, weights = batch
        length = features["input_word_ids"].shape[1]
        lengths.add(length)
        assert length in stream_input.buckets.tolist()
        assert int(tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1))) <= length
        assert weights.numpy().tolist() == [1.0] * len(weights)
    full = tokenizer(tf.constant(_texts(60, 0)))
    assert int(tf.reduce_max(tf.reduce_sum(full["input_mask"], axis=1))) <= max(lengths)
    assert len(lengths) > 1


def test_a_label_outside_the_task_names_its_record_or_is_skipped(binary_task):
    root = "ram://labels"
    _write(f"{root}/part-00.csv", _csv_bytes([("a good film", 1), ("a bad film", 0), ("so so", "maybe"), ("ok", 1)]))
    stream = Stream(StreamSource.open(f"{root}/*.csv", "--config.data.path", COLUMNS), "train")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"part-00.csv:3: label maybe is not a label of this task"):
        list(_input(binary_task).records(stream, _context(1, 0), training=False).as_numpy_iterator())
    kept = _input(binary_task, skip_corrupt_records=True).records(stream, _context(1, 0), training=False)
    assert [r["key"].decode() for r in kept.as_numpy_iterator()] == ["part-00.csv:1", "part-00.csv:2", "part-00.csv:4"]


def _damage(path: str) -> None:
    """Overwrites 40 bytes in the middle of a file with noise."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = bytearray(f.read())
    middle = len(data) // 2
    data[middle : middle + 40] = np.random.default_rng(0).integers(0, 256, 40, dtype=np.uint8).tobytes()
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("suffix", [".csv.gz", ".tfrecord"])
def test_a_damaged_shard_stops_the_stream_naming_it_even_when_records_may_be_skipped(binary_task, suffix):
    root = f"ram://damaged{suffix.replace('.', '_')}"
    _shards(root, num_files=2, per_file=200, suffix=suffix)
    _damage(f"{root}/part-01{suffix}")
    stream = Stream(StreamSource.open(f"{root}/*{suffix}", "--config.data.path", COLUMNS), "train")
    for skip in (False, True):
        stream_input = _input(binary_task, skip_corrupt_records=skip)
        with pytest.raises(tf.errors.OpError) as raised:
            list(stream_input.records(stream, _context(1, 0), training=False).as_numpy_iterator())
        assert f"{root}/part-01{suffix} is unreadable" in stream_input.read_error(stream, raised.value)


def test_labels_encode_in_tensorflow_as_the_in_memory_rules_do():
    values = ["0", "1.0", " 1 ", "2", "x", ""]
    encoded = [labels_lib.encode_binary(tf.constant(v)) for v in values]
    assert [(float(t), bool(ok)) for t, ok in encoded] == [
        (0.0, True),
        (1.0, True),
        (1.0, True),
        (0.0, False),
        (0.0, False),
        (0.0, False),
    ]
    assert [bool(labels_lib.encode_number(tf.constant(v))[1]) for v in ["3.5", "-2e3", "nan", "inf", "7 stars"]] == [
        True,
        True,
        False,
        False,
        False,
    ]
    table = labels_lib.lookup_table(("1", "2", "10"))
    assert [int(labels_lib.encode_index(tf.constant(v), table)[0]) for v in ["1", "10.0", " 2"]] == [0, 2, 1]
    hot, ok = labels_lib.encode_multi_hot(tf.constant("2|10"), table, 3, "|")
    assert bool(ok) and hot.numpy().tolist() == [0.0, 1.0, 1.0]
    assert not bool(labels_lib.encode_multi_hot(tf.constant("2|11"), table, 3, "|")[1])


@pytest.mark.slow
def test_two_workers_read_their_own_files_once_each_on_loopback(tmp_path, vocab_path):
    """Two workers stream shards of unequal sizes (tests/stream_probe.py): by the numbers they received,
    each read only its own files, an evaluation pass saw every record once across both, and the first
    epoch of training repeated nothing."""
    sizes = [11, 17, 9, 23, 13]
    data = tmp_path / "data"
    data.mkdir()
    for index, size in enumerate(sizes):
        rows = [(text, index * 100 + row) for row, text in enumerate(_texts(size, seed=index))]
        (data / f"part-{index}.csv").write_bytes(_csv_bytes(rows))
    env = subprocess_env()
    env["PYTHON"] = sys.executable
    env["LOCAL_CLUSTER_WORKER_CMD"] = f'exec "$PYTHON" {REPO / "tests" / "stream_probe.py"} "$@"'
    launcher = subprocess.run(
        ["bash", str(REPO / "launch" / "local_cluster.sh"), "2", "--log_dir", str(tmp_path / "logs")]
        + [f"--probe_dir={tmp_path}", f"--vocab_path={vocab_path}", f"--data={data}/part-*.csv"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launcher.returncode == 0, launcher.stdout + launcher.stderr
    workers = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    own_files = [{0, 2, 4}, {1, 3}]
    everything = {index * 100 + row for index, size in enumerate(sizes) for row in range(size)}
    evaluated = [[n for batch in worker["evaluated"] for n in batch] for worker in workers]
    assert sorted(evaluated[0] + evaluated[1]) == sorted(everything)
    for worker, numbers, files in zip(workers, evaluated, own_files):
        assert {n // 100 for n in numbers} == files
        trained = [n for batch in worker["trained"] for n in batch]
        assert {n // 100 for n in trained} <= files
        # The first epoch repeats nothing; only the length buckets' last partial batches (2 buckets of 4)
        # may hold their records back until the next epoch's arrive.
        first_epoch = sum(sizes[i] for i in files) - 2 * 4
        assert len(set(trained[:first_epoch])) == first_epoch


@pytest.mark.slow
def test_a_streamed_run_killed_mid_step_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, vocab_path):
    """SIGKILL in the middle of step 25 of 40, then a restart from the step-20 checkpoint: the input
    position is restored (the batches after it are the same), so the final weights are bit-identical.

    Dropout is off: its masks come from a random generator that starts afresh in each process, so
    with it on the weights differ after a restart whatever the input does."""
    data = tmp_path / "data"
    data.mkdir()
    for index in range(3):
        rows = [(text, (index + row) % 2) for row, text in enumerate(_texts(60, seed=index))]
        (data / f"part-{index}.csv").write_bytes(_csv_bytes(rows))
    flags = (
        "--deterministic",
        "--config.train.steps=40",
        "--config.train.checkpoint_every_steps=10",
        "--config.train.eval_every_steps=20",
        "--config.data.num_buckets=2",
        "--config.data.shuffle_buffer=50",
        "--config.model.bert.dropout_rate=0",
        "--config.model.bert.attention_dropout_rate=0",
        "--config.model.head_dropout_rate=0",
    )

    def digest(log: str) -> str:
        return re.search(r"Weights digest at step 40: (\w+)", log).group(1)

    whole = check_ok(run_trainer(tmp_path / "whole", vocab_path, f"{data}/part-*.csv", *flags))
    killed = run_trainer(tmp_path / "killed", vocab_path, f"{data}/part-*.csv", *flags, fault="kill_during_step:25")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = check_ok(run_trainer(tmp_path / "killed", vocab_path, f"{data}/part-*.csv", *flags))
    assert "resuming at step 20" in resumed.stderr
    assert digest(resumed.stderr) == digest(whole.stderr)


@pytest.mark.slow
def test_a_damaged_shard_is_named_at_start_or_stops_the_run_after_a_checkpoint(tmp_path, vocab_path):
    """A TFRecord shard damaged in its middle (past the first record, which its schema check reads). Met by
    the label sample at start: exit 2 naming it, nothing written. Met only in training (a small
    --config.data.label_sample): the run trains until the reader reaches the damage, saves a checkpoint of
    what it trained, names the shard and exits 1."""
    data = tmp_path / "data"
    data.mkdir()
    for index in range(3):
        rows = [(text, (index + row) % 2) for row, text in enumerate(_texts(100, seed=index))]
        _tfrecord_file(str(data / f"part-{index}.tfrecord"), rows)
    damaged = data / "part-1.tfrecord"
    body = bytearray(damaged.read_bytes())
    at = int(len(body) * 0.6)
    body[at : at + 16] = bytes(16)
    damaged.write_bytes(bytes(body))
    model_dir = tmp_path / "run"
    flags = ("--config.train.steps=200", "--config.train.checkpoint_every_steps=5", "--config.data.shuffle_buffer=8")

    at_start = run_trainer(model_dir, vocab_path, f"{data}/part-*.tfrecord", *flags)
    check_refused(at_start, r"part-1\.tfrecord is unreadable \(.*corrupted record.*\), found while reading the label")
    assert not model_dir.exists() or not any(model_dir.iterdir())

    process = run_trainer(model_dir, vocab_path, f"{data}/part-*.tfrecord", *flags, "--config.data.label_sample=16")
    log = process.stderr
    assert process.returncode == 1 and "Traceback" not in log, log[-3000:]
    stopped = re.search(r"part-1\.tfrecord is unreadable .* Stopped and saved a checkpoint at step (\d+)", log)
    assert stopped, log[-3000:]
    step = int(stopped.group(1))
    assert 0 < step < 200
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"ckpt-{step}")
