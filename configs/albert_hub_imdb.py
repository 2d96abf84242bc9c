"""IMDb sentiment with ALBERT base (albert_en_base) and its preprocessor from TF Hub.

Needs internet, or local copies of both SavedModels passed with
--config.model.hub_encoder=/dir and --config.model.hub_preprocessor=/dir.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.model.encoder = "hub"
    config.model.pretrained_dir = ""
    config.model.hub_encoder = "https://tfhub.dev/tensorflow/albert_en_base/3"
    config.model.hub_preprocessor = "https://tfhub.dev/tensorflow/albert_en_preprocess/3"
    config.data.seq_length = 128
    config.train.batch_size = 32
    config.train.epochs = 2
    config.train.learning_rate = 2e-5
    return config
