"""Paraphrase detection on sentence pairs (GLUE MRPC from TFDS), from the offline MiniLM weights.

Each example is two sentences, packed [CLS] a [SEP] b [SEP] with token type
ids 0 and 1; the labels are TFDS's class names (equivalent, not_equivalent).
GLUE keeps its test labels hidden, so the validation split is the test split
here and a seeded 10% of train is held out for validation. Needs TFDS (or a
prepared --data_dir); any CSV/JSONL with two text columns works the same with
--config.data.path, --config.data.text_column and --config.data.text_pair_column.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.data.source = "tfds"
    config.data.tfds_name = "glue/mrpc"
    config.data.text_column = "sentence1"
    config.data.text_pair_column = "sentence2"
    config.data.validation_fraction = 0.1
    config.data.seq_length = 128
    config.train.epochs = 3
    config.train.learning_rate = 5e-5
    return config
