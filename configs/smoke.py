"""A tiny randomly initialised BERT for smoke tests: seconds per run on a CPU.

Needs a WordPiece vocabulary: --config.model.vocab_path=/path/vocab.txt.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.model.encoder = "bert"
    config.model.pretrained_dir = ""
    config.model.bert.hidden_size = 32
    config.model.bert.num_layers = 2
    config.model.bert.num_heads = 2
    config.model.bert.intermediate_size = 64
    config.model.bert.max_position_embeddings = 64
    config.data.seq_length = 32
    config.train.batch_size = 8
    config.train.steps = 20
    config.train.learning_rate = 3e-3
    config.train.log_every_steps = 5
    config.train.checkpoint_every_steps = 10
    config.eval.batch_size = 8
    return config
