"""IMDb sentiment with a native ALBERT imported from a local Hugging Face-format directory.

Pass the directory with --config.model.pretrained_dir=/models/albert-base-v2;
it must hold config.json, model.safetensors and spiece.model. albert-base-v2
is on the Hugging Face Hub (https://huggingface.co/albert/albert-base-v2, e.g.
`huggingface-cli download albert/albert-base-v2 --local-dir /models/albert-base-v2`
on a machine with internet); nothing is downloaded here. The SentencePiece
model comes from the same directory unless --config.model.vocab_path is set.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.model.encoder = "albert"
    config.model.pretrained_dir = ""
    config.data.seq_length = 128
    config.train.batch_size = 32
    config.train.epochs = 2
    config.train.learning_rate = 2e-5
    return config
