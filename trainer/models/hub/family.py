"""The TF Hub family: any encoder SavedModel with the BERT input/output dicts, and its preprocessor.

Hub encoders bring their own architecture and weights (and compute in the
dtype they were exported with), so this family has no config section of its
own: `model.hub_encoder` and `model.hub_preprocessor` name the two models.
"""

from typing import Any

import tensorflow as tf
import tf_keras

from trainer.models.family import EncoderFamily
from trainer.models.hub import loading
from trainer.models.hub.tokenizer import HubPreprocessor
from trainer.models.tokenizer import HEAD, Tokenizer, Truncation
from trainer.schema import ConfigError


class HubFamily(EncoderFamily):
    name = "hub"

    @classmethod
    def check_config(cls, model_config: Any) -> None:
        if not (model_config.hub_encoder and model_config.hub_preprocessor):
            raise ConfigError(
                "--config.model.encoder=hub needs both --config.model.hub_encoder and "
                "--config.model.hub_preprocessor (TF Hub URLs or local SavedModel directories)."
            )

    @classmethod
    def check_files(cls, model_config: Any) -> None:
        loading.check_local(model_config.hub_encoder, "--config.model.hub_encoder")
        loading.check_local(model_config.hub_preprocessor, "--config.model.hub_preprocessor")

    def layer_depths(self, variables: list[tf.Variable]) -> list[tuple[tf.Variable, int]]:
        del variables  # A hub encoder's layers are not ours to tell apart: one rate for all.
        return []

    def build_tokenizer(self, truncation: Truncation = HEAD) -> Tokenizer:
        return HubPreprocessor(self.model_config.hub_preprocessor, self.seq_length, truncation)

    def build_encoder(self, trainable: bool, sequence_output: bool = False) -> tf_keras.layers.Layer:
        del sequence_output  # Hub encoders always return both.
        return loading.keras_layer(self.model_config.hub_encoder, "--config.model.hub_encoder", trainable)
