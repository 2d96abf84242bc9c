"""IMDb star ratings as 8 classes (1-4 and 7-10 stars), offline: MiniLM over whole reviews.

The labels are the ratings in the aclImdb file names (<id>_<rating>.txt), read
from the archive or directory the binary job uses
(--config.data.path=aclImdb_v1.tar.gz); the label names are the ratings, in
order. Besides accuracy and macro-F1, evaluation reports how far the predicted
rating lands from the true one (mae, within_one). The recipe is
minilm_imdb_long.py's: 384 tokens with both ends of long reviews, 4 length
buckets, bfloat16 on CPUs, 2 epochs.
"""

from configs import minilm_imdb_long


def get_config():
    config = minilm_imdb_long.get_config()
    config.task.type = "multiclass"
    config.data.label_source = "rating"
    return config
