"""The interface of an encoder family, and the shared half of the native (Hugging Face-format) ones.

A family is everything the trainer needs to know about one kind of encoder:
its architecture schema (the config section `model.<name>`, the shape of a
randomly initialised encoder), its checks, its tokenizer, its Keras encoder
and its pretrained weights. Families are registered by name in
`trainer/models/registry.py`; nothing else in the trainer tests encoder names.

An instance serves one run: it is made from the model config and the sequence
length, resolves where the weights and vocabulary come from and checks the
architecture against the sequence length, before anything is built.

Every encoder maps {input_word_ids, input_mask, input_type_ids} (int32
[batch, seq]) to a dict with `pooled_output` [batch, hidden] (and, unless it
was built with `pooled_output_only`, `sequence_output`).
"""

import abc
import dataclasses
import os
import re
from typing import Any, ClassVar

from absl import logging
import tensorflow as tf
import tf_keras

from trainer.models import hf_format
from trainer.models.tokenizer import HEAD, Tokenizer, Truncation
from trainer.schema import ConfigError

# A transformer block's variables: .../layer_<i>/... (ALBERT: its one .../shared_layer/...).
_BLOCK_NAME = re.compile(r"/(?:layer_(\d+)|shared_layer)/")


class EncoderFamily(abc.ABC):
    """One kind of encoder, resolved for a run."""

    name: ClassVar[str]
    # Schema of the config section model.<name> (a dataclass whose first field, vocab_size,
    # comes from the vocabulary), or None for a family without a random-init shape.
    architecture: ClassVar[type | None] = None

    def __init__(self, model_config: Any, seq_length: int):
        self.model_config = model_config
        self.seq_length = seq_length

    @classmethod
    def check_config(cls, model_config: Any) -> None:
        """Checks the model config alone, before any file is read; raises ConfigError."""
        del model_config  # Nothing to check unless a family says so.

    @classmethod
    def check_files(cls, model_config: Any) -> None:
        """Checks the files the model config names, without TensorFlow (before a cluster forms); raises UserError."""
        del model_config  # Nothing to check unless a family says so.

    @abc.abstractmethod
    def build_tokenizer(self, truncation: Truncation = HEAD) -> Tokenizer:
        """Strings -> encoder inputs of `seq_length` tokens, in TF ops (used in tf.data and in exports)."""

    @abc.abstractmethod
    def build_encoder(self, trainable: bool, sequence_output: bool = False) -> tf_keras.layers.Layer:
        """The Keras encoder, called on a dict of inputs; its variables are created on first call.

        Its outputs hold `pooled_output`, and `sequence_output` too when asked for.
        """

    def load_pretrained(self, encoder: tf_keras.layers.Layer) -> None:
        """Assigns pretrained weights to a built encoder (nothing to do for a random one)."""
        del encoder

    def describe(self) -> str:
        """One phrase for the log: which encoder this is."""
        return f"{self.name} encoder"

    def layer_depths(self, variables: list[tf.Variable]) -> list[tuple[tf.Variable, int]]:
        """Each encoder variable's depth from the top, for layer-wise learning rates: 1 for the last block,
        one more per block below it, the embeddings deepest. Variables above the blocks (the pooler) and
        outside the encoder are left out (depth 0).

        By the names of this project's encoders (blocks `layer_<i>`, ALBERT's one `shared_layer`).
        """
        blocks = {v.ref(): _BLOCK_NAME.search(v.name) for v in variables}
        indices = [int(match.group(1) or 0) for match in blocks.values() if match]
        top = max(indices, default=-1)
        depths = []
        for variable in variables:
            match = blocks[variable.ref()]
            if match:
                depths.append((variable, top - int(match.group(1) or 0) + 1))
            elif "/embeddings/" in variable.name:
                depths.append((variable, top + 2))
        return depths


class NativeFamily(EncoderFamily):
    """A family implemented in this project, with Hugging Face-format weight import.

    `define` makes one from its parts; the rest is shared.
    """

    encoder_class: ClassVar[type]
    tokenizer_class: ClassVar[type]
    converter: ClassVar[hf_format.Converter]

    @classmethod
    def define(
        cls, name: str, architecture: type, encoder_class: type, tokenizer_class: type, converter: hf_format.Converter
    ) -> type["NativeFamily"]:
        """The family class of a native encoder, from its name and parts."""
        parts = {
            "name": name,
            "architecture": architecture,
            "encoder_class": encoder_class,
            "tokenizer_class": tokenizer_class,
            "converter": converter,
        }
        return type(f"{architecture.__name__.removesuffix('Config')}Family", (cls,), parts)

    def __init__(self, model_config: Any, seq_length: int):
        super().__init__(model_config, seq_length)
        self.check_files(model_config)
        self.pretrained_dir = hf_format.resolve_dir(model_config.pretrained_dir) if model_config.pretrained_dir else ""
        self.vocab_path = model_config.vocab_path or os.path.join(self.pretrained_dir, self.converter.vocab_file)
        if self.pretrained_dir:
            self.config = self.converter.load_config(self.pretrained_dir)
            source = os.path.join(self.pretrained_dir, hf_format.CONFIG_FILE)
        else:
            vocab_size = self.build_tokenizer().vocab_size
            self.config = dataclasses.replace(model_config.architecture, vocab_size=vocab_size)
            source = f"--config.model.{self.name}"
        self._check_architecture(source)

    @classmethod
    def check_config(cls, model_config: Any) -> None:
        if not (model_config.pretrained_dir or model_config.vocab_path):
            raise ConfigError(
                f"--config.model.encoder={cls.name} needs --config.model.pretrained_dir (Hugging Face-format "
                "directory) or, for a randomly initialised encoder, --config.model.vocab_path."
            )

    @classmethod
    def check_files(cls, model_config: Any) -> None:
        pretrained_dir = hf_format.resolve_dir(model_config.pretrained_dir) if model_config.pretrained_dir else ""
        if pretrained_dir and not tf.io.gfile.isdir(pretrained_dir):
            raise ConfigError(f"--config.model.pretrained_dir={model_config.pretrained_dir}: no such directory.")
        if model_config.vocab_path:
            cls.tokenizer_class.check_vocabulary(model_config.vocab_path, "--config.model.vocab_path")
        else:
            vocab = os.path.join(pretrained_dir, cls.converter.vocab_file)
            cls.tokenizer_class.check_vocabulary(vocab, f"--config.model.pretrained_dir={model_config.pretrained_dir}")

    def _check_architecture(self, source: str) -> None:
        """The architecture's own rules, against the run's sequence length; `source` is where it came from."""
        hidden, heads = self.config.hidden_size, self.config.num_heads
        if hidden % heads:
            raise ConfigError(f"{source}.hidden_size={hidden} is not divisible by {source}.num_heads={heads}.")
        positions = self.config.max_position_embeddings
        if self.seq_length > positions:
            raise ConfigError(
                f"--config.data.seq_length={self.seq_length} exceeds the encoder's {positions} position "
                f"embeddings ({source}.max_position_embeddings)."
            )

    def build_tokenizer(self, truncation: Truncation = HEAD) -> Tokenizer:
        return self.tokenizer_class(self.vocab_path, self.seq_length, self.model_config.lower_case, truncation)

    def build_encoder(self, trainable: bool, sequence_output: bool = False) -> tf_keras.layers.Layer:
        # A head on the pooled output only needs [CLS] from the last block: it computes that alone.
        return self.encoder_class(self.config, pooled_output_only=not sequence_output, trainable=trainable)

    def load_pretrained(self, encoder: tf_keras.layers.Layer) -> None:
        if self.pretrained_dir:
            self.converter.load_weights(encoder, self.pretrained_dir)
        else:
            logging.info("No --config.model.pretrained_dir: the %s encoder starts from random weights.", self.name)
