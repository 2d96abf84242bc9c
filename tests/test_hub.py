"""The TF Hub encoder path, with small hub-format SavedModels exported here.

The encoder SavedModel has the TF Hub BERT interface (input_word_ids,
input_mask, input_type_ids -> pooled_output, sequence_output); the
preprocessor has `tokenize` (strings -> [batch, words, wordpieces]) and
`bert_pack_inputs(segments, seq_length)`, like bert_en_uncased_preprocess.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras

from trainer.models.bert.encoder import BertConfig, BertEncoder
from trainer.models.bert.tokenizer import WordPieceTokenizer
from trainer.models.hub import loading as hub_loading
from trainer.models.hub.tokenizer import HubPreprocessor
from trainer.tasks.base import INPUT_KEYS

from conftest import check_ok, in_process_probabilities, read_scalars, run_trainer, serve_in_fresh_process


class HubStylePreprocessor(tf.Module):
    def __init__(self, vocab_path: str):
        super().__init__()
        with open(vocab_path) as f:
            vocab = [line.rstrip("\n") for line in f]
        self._cls, self._sep = vocab.index("[CLS]"), vocab.index("[SEP]")
        lookup = tf.lookup.StaticVocabularyTable(
            tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(vocab), dtype=tf.int64)), num_oov_buckets=1
        )
        self._tokenizer = tf_text.BertTokenizer(lookup, token_out_type=tf.int64, lower_case=True)
        # Like TF Hub's preprocessors, packing takes one segment or two: trace both before saving.
        segment = tf.RaggedTensorSpec([None, None, None], tf.int32, ragged_rank=2)
        for count in (1, 2):
            self.bert_pack_inputs.get_concrete_function([segment] * count, tf.TensorSpec([], tf.int32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        return tf.cast(self._tokenizer.tokenize(texts), tf.int32)

    @tf.function
    def bert_pack_inputs(self, segments, seq_length):
        tokens = [segment.merge_dims(1, 2) for segment in segments]
        tokens[0] = tokens[0][:, : seq_length - len(segments) - 1]  # Packing cuts a long single text.
        ids, type_ids = tf_text.combine_segments(tokens, self._cls, self._sep)
        word_ids, mask = tf_text.pad_model_inputs(ids, seq_length)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, seq_length)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}


def export_hub_encoder(path: str, vocab_size: int) -> None:
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    inputs = {key: tf_keras.Input(shape=(None,), dtype=tf.int32, name=key) for key in INPUT_KEYS}
    model = tf_keras.Model(inputs, BertEncoder(config)(inputs))
    tf.saved_model.save(model, path)


@pytest.fixture(scope="module")
def hub_models(tmp_path_factory, vocab_path) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("hub")
    with open(vocab_path) as f:
        vocab_size = sum(1 for _ in f)
    export_hub_encoder(str(root / "encoder"), vocab_size)
    tf.saved_model.save(HubStylePreprocessor(vocab_path), str(root / "preprocessor"))
    return str(root / "encoder"), str(root / "preprocessor")


@pytest.mark.slow
def test_hub_preprocessor_packs_pairs_like_the_native_tokenizer(hub_models, vocab_path):
    texts = tf.constant(["good great wonderful excellent love brilliant", "a", ""])
    pairs = tf.constant(["bad awful", "the plot was " * 20, "fun"])
    for seq_length in (8, 16):
        hub = HubPreprocessor(hub_models[1], seq_length)(texts, pairs)
        native = WordPieceTokenizer(vocab_path, seq_length)(texts, pairs)
        for key, value in native.items():
            np.testing.assert_array_equal(hub[key], value, err_msg=f"{seq_length}: {key}")
        assert hub["input_type_ids"].numpy()[0].max() == 1


def test_hub_preprocessor_packs_like_the_native_tokenizer(hub_models, vocab_path):
    texts = tf.constant(["Great film<br />I love it!", "the plot was " * 20, ""])
    hub = HubPreprocessor(hub_models[1], seq_length=16)(texts)
    native = WordPieceTokenizer(vocab_path, seq_length=16)(texts)
    for key in INPUT_KEYS:
        assert hub[key].dtype == tf.int32
        np.testing.assert_array_equal(hub[key].numpy(), native[key].numpy())


def test_hub_encoder_loads_as_a_trainable_keras_layer(hub_models):
    layer = hub_loading.keras_layer(hub_models[0], "--config.model.hub_encoder", trainable=True)
    inputs = {key: tf.ones([2, 8], tf.int32) for key in INPUT_KEYS}
    outputs = layer(inputs)
    assert outputs["pooled_output"].shape == (2, 32) and outputs["sequence_output"].shape == (2, 8, 32)
    assert layer.trainable_variables


def test_a_directory_that_is_not_a_saved_model_is_rejected(tmp_path):
    with pytest.raises(hub_loading.HubLoadError, match=r"--config.model.hub_encoder=.*must be a SavedModel directory"):
        hub_loading.load(str(tmp_path), "--config.model.hub_encoder")


@pytest.mark.slow
def test_train_and_export_with_a_hub_encoder(hub_models, tmp_path, vocab_path, imdb_dir):
    encoder, preprocessor = hub_models
    check_ok(
        run_trainer(
            tmp_path,
            vocab_path,
            imdb_dir,
            "--strategy=one_device",
            "--config.model.encoder=hub",
            f"--config.model.hub_encoder={encoder}",
            f"--config.model.hub_preprocessor={preprocessor}",
            "--config.train.steps=60",
            "--config.train.log_every_steps=10",
        )
    )
    losses = read_scalars(tmp_path / "train")["loss"]
    assert losses[60] < 0.9 * losses[10], losses
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["num_examples"] == 40
    assert metrics["test"]["accuracy"] >= 0.8, metrics
    texts = ["great fun", "awful mess", ""]
    served = serve_in_fresh_process(tmp_path / "export" / "60", texts, tmp_path)
    np.testing.assert_allclose(served, in_process_probabilities(tmp_path, texts), atol=1e-5)
