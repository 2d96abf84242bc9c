"""A tiny randomly initialised ALBERT for smoke tests: seconds per run on a CPU.

Needs a SentencePiece model: --config.model.vocab_path=/path/spiece.model.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.model.encoder = "albert"
    config.model.pretrained_dir = ""
    config.model.albert.embedding_size = 16
    config.model.albert.hidden_size = 32
    config.model.albert.num_layers = 2
    config.model.albert.num_heads = 2
    config.model.albert.intermediate_size = 64
    config.model.albert.max_position_embeddings = 64
    config.data.seq_length = 32
    config.train.batch_size = 8
    config.train.steps = 20
    config.train.learning_rate = 3e-3
    config.train.log_every_steps = 5
    config.train.checkpoint_every_steps = 10
    config.eval.batch_size = 8
    return config
