"""IMDb sentiment with small BERT (L-4, H-512, A-8) and its preprocessor from TF Hub.

Needs internet, or local copies of both SavedModels passed with
--config.model.hub_encoder=/dir and --config.model.hub_preprocessor=/dir.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.model.encoder = "hub"
    config.model.pretrained_dir = ""
    config.model.hub_encoder = "https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-4_H-512_A-8/1"
    config.model.hub_preprocessor = "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
    config.data.seq_length = 128
    config.train.batch_size = 32
    config.train.epochs = 5
    config.train.learning_rate = 3e-5
    return config
