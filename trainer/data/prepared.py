"""Prepared token shards: a corpus tokenized once (python -m trainer.prepare) and streamed by training.

  DIR/
    train-00000-of-00016.tfrecord ...  tf.train.Example records, one per text (or pair)
    test-00000-of-00004.tfrecord ...   when the source has a test split
    prepared.json                      written last: what made the shards and what they hold

A record holds its key (file and line, or the source's id), its label as the
source wrote it (the task encodes it when training, as for text shards), the
encoder inputs at the prepared seq_length (input_word_ids, input_type_ids) and
its token count (`length`; the mask is the first `length` positions). Training
reads DIR like any other stream: hash-split into train and validation by key,
sharded by file across input pipelines, grouped by the exact lengths. It
refuses shards made with another tokenizer, seq_length, truncation or pairing:
their token ids would mean something else to the model.

prepared.json is written last, by a rename: a directory whose writing was cut
off is not taken for a prepared one.
"""

import json
import os
import re

import numpy as np
import tensorflow as tf

from trainer.config import DataConfig
from trainer.data.examples import DataError
from trainer.run_dir import write_json_atomically

METADATA_FILE = "prepared.json"
FORMAT = "bert-trainer-prepared/1"
SPLITS = ("train", "test")
TOKEN_FEATURES = ("input_word_ids", "input_type_ids")
_SHARD = re.compile(rf"^(?:{'|'.join(SPLITS)})-\d{{5}}-of-\d{{5}}\.tfrecord$")


def is_prepared(path: str) -> bool:
    """Whether `path` is one directory holding prepared shards (by its metadata file)."""
    if not path or "," in path:
        return False
    try:
        return tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, METADATA_FILE))
    except tf.errors.OpError:
        return False


def is_shard(name: str) -> bool:
    """Whether a file name is that of a prepared shard."""
    return bool(_SHARD.match(name))


def looks_unfinished(path: str) -> bool:
    """Whether `path` is a directory of shards without prepared.json: a prepare that was cut off."""
    try:
        names = tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else []
    except tf.errors.OpError:
        return False
    return METADATA_FILE not in names and any(is_shard(name) for name in names)


def shard_names(split: str, num_shards: int) -> list[str]:
    """The file names of a split's shards."""
    return [f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]


def read_metadata(path: str, flag: str) -> dict:
    """DIR/prepared.json; raises DataError naming `flag` and the file when it cannot serve."""
    name = os.path.join(path, METADATA_FILE)
    try:
        with tf.io.gfile.GFile(name) as f:
            metadata = json.load(f)
    except (tf.errors.OpError, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{flag}={path}: {name} cannot be read ({getattr(e, 'message', e)}).") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise DataError(f"{flag}={path}: {name} is not the metadata of prepared shards ({FORMAT}).")
    return metadata


def split_files(path: str, metadata: dict, split: str) -> tuple[str, ...]:
    """The shard files of one prepared split (none when it was not prepared)."""
    return tuple(os.path.join(path, name) for name in metadata["splits"].get(split, {}).get("files", ()))


def data_settings(data_config: DataConfig) -> dict:
    """What of the data config shapes the token ids: prepared shards record it, training checks it."""
    truncation = data_config.truncation
    if truncation == "head_tail":
        truncation = f"head_tail:{data_config.head_fraction:g}"
    return {"seq_length": data_config.seq_length, "truncation": truncation, "pairs": bool(data_config.text_pair_column)}


def check_data(metadata: dict, path: str, flag: str, data_config: DataConfig) -> None:
    """Raises DataError when the shards were prepared for another data config than this run's."""
    for key, value in data_settings(data_config).items():
        if metadata[key] != value:
            raise DataError(
                f"{flag}={path} was prepared with {key} {metadata[key]!r}, but this run's --config.data gives "
                f"{value!r}: prepare it again (python -m trainer.prepare) or train with the data config it was "
                "made for."
            )


def check_tokenizer(prepared_with: str, where: str, fingerprint: str) -> None:
    """Raises DataError when shards tokenized by `prepared_with` do not fit a model tokenizing with `fingerprint`."""
    if prepared_with != fingerprint:
        raise DataError(
            f"{where} was tokenized by {prepared_with}, but this run's model tokenizes with {fingerprint}: "
            "its token ids would mean other words. Prepare it again with this run's config."
        )


def parse(serialized: tf.Tensor, seq_length: int) -> dict[str, tf.Tensor]:
    """One record -> {key, label, input_word_ids, input_mask, input_type_ids, length}."""
    spec = {
        "key": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        "length": tf.io.FixedLenFeature([], tf.int64),
        **{name: tf.io.FixedLenFeature([seq_length], tf.int64) for name in TOKEN_FEATURES},
    }
    record = tf.io.parse_single_example(serialized, spec)
    length = tf.cast(record["length"], tf.int32)
    features = {name: tf.cast(record[name], tf.int32) for name in TOKEN_FEATURES}
    mask = tf.cast(tf.range(seq_length) < length, tf.int32)
    return {"key": record["key"], "label": record["label"], "length": length, "input_mask": mask, **features}


def _example(key: bytes, label: bytes, length: int, word_ids: np.ndarray, type_ids: np.ndarray) -> bytes:
    def ints(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def text(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    feature = {
        "key": text(key),
        "label": text(label),
        "length": ints([length]),
        "input_word_ids": ints(word_ids),
        "input_type_ids": ints(type_ids),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class ShardWriter:
    """Writes one split's records round-robin into `num_shards` TFRecord files of `directory`."""

    def __init__(self, directory: str, split: str, num_shards: int):
        self.names = shard_names(split, num_shards)
        self._writers = [tf.io.TFRecordWriter(os.path.join(directory, name)) for name in self.names]
        self.count = 0

    def write(self, batch: dict[str, np.ndarray]) -> None:
        """Writes a tokenized batch: key, label (bytes), length, input_word_ids, input_type_ids."""
        for row in range(len(batch["key"])):
            record = _example(
                batch["key"][row],
                batch["label"][row],
                int(batch["length"][row]),
                batch["input_word_ids"][row],
                batch["input_type_ids"][row],
            )
            self._writers[self.count % len(self._writers)].write(record)
            self.count += 1

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def write_metadata(directory: str, metadata: dict) -> None:
    """prepared.json, by a rename: it appears only once every shard is complete."""
    write_json_atomically(os.path.join(directory, METADATA_FILE), {"format": FORMAT, **metadata})
