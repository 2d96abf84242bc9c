"""IMDb star ratings as a regression, offline: the score is the predicted rating in stars.

As minilm_imdb_rating.py (the ratings in the aclImdb file names, MiniLM over
384 tokens, 2 epochs), with one output trained on ratings scaled to mean 0 and
deviation 1; the export answers in stars (`score`), the scaling undone inside
the model. Evaluation reports MSE, MAE, Pearson's and Spearman's correlations
and the share within one star.
"""

from configs import minilm_imdb_rating


def get_config():
    config = minilm_imdb_rating.get_config()
    config.task.type = "regression"
    config.task.normalize_targets = True
    return config
