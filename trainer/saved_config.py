"""A run's config.json as a config file: `--config=runs/x/config.json` reruns that experiment.

trainer.main hands ml_collections this module with the JSON path as its
argument (see `experiment.config_file_argument`).
"""

import ml_collections

from trainer import experiment


def get_config(path: str) -> ml_collections.ConfigDict:
    return experiment.from_json(path)
