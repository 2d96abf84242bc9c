"""IMDb sentiment by feature extraction: MiniLM-L6-H384 frozen, only a deeper head trained.

The same data and encoder weights as configs/minilm_imdb.py. Only the head
learns, from random initialisation, so it gets:
- a hidden layer (dense 256 -> batch normalization -> ReLU): a single logit on
  frozen features is a linear probe; the pooled output was never trained for
  sentiment, and a non-linear head gets more out of it;
- a learning rate of 1e-3, twenty times the fine-tuning one: 5e-5 is small to
  keep the pretrained encoder from drifting, which is moot when it is frozen,
  and a head trained from scratch at 5e-5 barely moves in one epoch.

`python -m experiments.compare` trains this variant and full fine-tuning side
by side; it takes the frozen run's head and learning rate from this config.
"""

from trainer.experiment import default_config


def get_config():
    config = default_config()
    config.model.freeze_encoder = True
    config.model.head_hidden_size = 256
    config.train.learning_rate = 1e-3
    return config
