r"""Tokenizes a corpus once into prepared token shards, the fast input for repeated experiments.

  python -m trainer.prepare --config=minilm_imdb_long \
      --config.data.path=aclImdb_v1.tar.gz --output=prepared/imdb-384 [--num_shards=16]

Give it the config you will train with: its encoder's tokenizer, seq_length,
truncation and columns make the shards. Every record of the source is written
(the split into train and validation happens when training, by each record's
key), and a test split of the source (aclImdb's, or --config.data.test_path)
becomes the directory's test split. Train with --config.data.path=DIR; a run
whose tokenizer or data settings differ is refused. The layout is in
trainer/data/prepared.py. Exit statuses as trainer.main's: 0 done, 2 bad input,
1 crash or failed write.
"""

import dataclasses
import datetime
import os
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

from trainer import command_line, errors, experiment
from trainer.config import Experiment
from trainer.data import prepared, sources
from trainer.data.examples import LIST_SEPARATOR, Examples
from trainer.data.streams import Stream
from trainer.models.tokenizer import Tokenizer
from trainer.tasks import registry as task_registry

flags.DEFINE_string("output", None, "Directory the prepared shards and prepared.json are written to.")
flags.DEFINE_integer("num_shards", 16, "Shard files per split: at least the number of training workers.")

FLAGS = flags.FLAGS

_BATCH = 512
_PROGRESS_SECONDS = 10.0


def check_output(output: str) -> None:
    """Refuses an --output that holds prepared shards already or files of anything else; a directory left
    by a prepare that was cut off (shards, no prepared.json) is written over."""
    if not output:
        raise errors.UserError("--output is required: the directory to write the prepared shards to.")
    if not tf.io.gfile.exists(output):
        return
    if not tf.io.gfile.isdir(output):
        raise errors.UserError(f"--output={output} is a file; give a directory.")
    if prepared.is_prepared(output):
        raise errors.UserError(f"--output={output} holds prepared shards already; choose another or delete it.")
    others = [name for name in tf.io.gfile.listdir(output) if not prepared.is_shard(name)]
    if others:
        raise errors.UserError(f"--output={output} is not empty (it holds {others[0]}); give a new directory.")


def _records(split: Examples | Stream, label_delimiter: str) -> tf.data.Dataset:
    """{key, text, text_pair, label} strings of every record of a split, in the source's order."""
    if isinstance(split, Stream):
        return split.records(tf.data.Dataset.from_tensor_slices(list(split.files)), parallel=True)
    joiner = label_delimiter or LIST_SEPARATOR
    label_strings = [joiner.join(map(str, v)) if isinstance(v, list) else str(v) for v in split.labels]
    pairs = split.text_pairs if split.text_pairs is not None else np.full(len(split), "", dtype=object)
    return tf.data.Dataset.from_tensor_slices(
        {
            "key": split.ids.astype(str),
            "text": split.texts.astype(str),
            "text_pair": pairs.astype(str),
            "label": np.array(label_strings, dtype=str),
        }
    )


def write_split(
    split: Examples | Stream, name: str, tokenizer: Tokenizer, output: str, num_shards: int, pairs: bool, delimiter: str
) -> dict:
    """Tokenizes one split into its shards, logging progress; returns its metadata entry."""

    def tokenized(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = tokenizer(batch["text"], batch["text_pair"] if pairs else None)
        length = tf.reduce_sum(features["input_mask"], axis=1)
        return {"key": batch["key"], "label": batch["label"], "length": length, **features}

    batches = _records(split, delimiter).batch(_BATCH).map(tokenized, num_parallel_calls=tf.data.AUTOTUNE)
    total = len(split) if isinstance(split, Examples) else None
    writer = prepared.ShardWriter(output, name, num_shards)
    began = last_log = time.monotonic()
    try:
        for batch in batches.prefetch(2).as_numpy_iterator():
            writer.write(batch)
            now = time.monotonic()
            if now - last_log >= _PROGRESS_SECONDS:
                last_log = now
                rate = writer.count / (now - began)
                eta = f", ETA {(total - writer.count) / rate:.0f} s" if total else ""
                logging.info("%s: %s records, %.0f records/s%s.", name, f"{writer.count:,}", rate, eta)
    finally:
        writer.close()
    seconds = time.monotonic() - began
    logging.info(
        "%s: %s records in %d shard(s), %.1f s (%.0f records/s).",
        name,
        f"{writer.count:,}",
        num_shards,
        seconds,
        writer.count / max(seconds, 1e-9),
    )
    return {"files": writer.names, "records": writer.count}


def prepare(config: Experiment, output: str, num_shards: int, tfds_data_dir: str | None = None) -> dict:
    """Writes every record of the configured source, tokenized, to `output`; returns the metadata."""
    check_output(output)
    if prepared.is_prepared(config.data.path):
        raise errors.UserError(f"--config.data.path={config.data.path} is prepared already: train with it.")
    if num_shards < 1:
        raise errors.UserError(f"--num_shards={num_shards}: expected at least 1.")
    # Every record: the validation split is drawn from the shards when training, by key.
    data_config = dataclasses.replace(config.data, validation_fraction=0.0)
    splits = sources.load_splits(data_config, config.seed, tfds_data_dir)
    tokenizer = task_registry.build_task(config).build_tokenizer()
    tf.io.gfile.makedirs(output)
    pairs, delimiter = bool(data_config.text_pair_column), data_config.label_delimiter
    written = {
        name: write_split(split, name, tokenizer, output, num_shards, pairs, delimiter)
        for name, split in (("train", splits.train), ("test", splits.test))
        if sources.has_examples(split)
    }
    metadata = {
        **prepared.data_settings(data_config),
        "tokenizer": tokenizer.fingerprint,
        "encoder": config.model.encoder,
        "source": data_config.path or data_config.tfds_name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "splits": written,
    }
    prepared.write_metadata(output, metadata)
    logging.info("Prepared %s: train with --config.data.path=%s.", os.path.join(output, prepared.METADATA_FILE), output)
    return metadata


def main(argv: list[str]) -> None:
    del argv  # parse_flags refuses anything but flags.

    def validated_prepare() -> None:
        config = experiment.validate(FLAGS.config, "default", reads_data=True, trains=False)
        prepare(config, FLAGS.output, FLAGS.num_shards, FLAGS.data_dir)

    command_line.run_with_exit_statuses(validated_prepare)


def cli() -> None:
    """The console script's entry point (setup.py)."""
    app.run(main, flags_parser=command_line.parse_flags)


if __name__ == "__main__":
    cli()
