"""The native ALBERT encoder, its Hugging Face weight import/export and SentencePiece tokenization.

No pretrained ALBERT can be downloaded here, so a tiny SentencePiece model is
trained on generated reviews and a tiny random ALBERT stands in for weights.
"""

import math
import random

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras

from configs import albert_smoke
from trainer.experiment import parse
from trainer.models import hf_format
from trainer.models.albert import convert_hf
from trainer.models.albert.encoder import AlbertConfig, AlbertEncoder
from trainer.models.albert.tokenizer import SentencePieceTokenizer
from trainer.models.hub.tokenizer import HubPreprocessor
from trainer.models.tokenizer import Truncation, VocabularyError, clean_text
from trainer.schema import ConfigError
from trainer.tasks.registry import build_task

import conftest
from conftest import check_ok, in_process_probabilities, make_review, run_trainer, serve_in_fresh_process

TINY = AlbertConfig(
    vocab_size=48,
    embedding_size=8,
    hidden_size=16,
    num_layers=3,
    num_heads=4,
    intermediate_size=32,
    max_position_embeddings=16,
)
ALBERT_SMOKE_CONFIG = str(conftest.REPO / "configs" / "albert_smoke.py")


@pytest.fixture(scope="module")
def spiece_path(tmp_path_factory) -> str:
    """A SentencePiece model laid out like ALBERT's: <pad>=0, <unk>=1, then [CLS], [SEP], [MASK]."""
    rng = random.Random(0)
    sentences = [clean_text(make_review(rng, i % 2 == 0)).numpy().decode().lower() for i in range(200)]
    prefix = tmp_path_factory.mktemp("spiece") / "spiece"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(prefix),
        vocab_size=TINY.vocab_size,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        pad_id=0,
        pad_piece="<pad>",
        unk_id=1,
        unk_piece="<unk>",
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    return f"{prefix}.model"


def build(config: AlbertConfig = TINY) -> AlbertEncoder:
    encoder = AlbertEncoder(config)
    encoder(random_inputs(1, 8))
    return encoder


def randomize(encoder: AlbertEncoder, seed: int = 1) -> AlbertEncoder:
    """Random values for every weight, so LayerNorm scales and biases differ from their 1/0 start too."""
    rng = np.random.default_rng(seed)
    encoder.set_weights([rng.normal(0.0, 0.5, size=w.shape).astype(np.float32) for w in encoder.get_weights()])
    return encoder


def random_inputs(batch: int, length: int, seed: int = 0) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    mask = np.ones([batch, length], np.int32)
    mask[0, length // 2 :] = 0  # a padded row exercises the attention mask
    return {
        "input_word_ids": tf.constant(rng.integers(5, TINY.vocab_size, size=(batch, length)), tf.int32),
        "input_mask": tf.constant(mask),
        "input_type_ids": tf.zeros([batch, length], tf.int32),
    }


def test_output_shapes_and_tanh_pooler():
    outputs = build()(random_inputs(3, 10))
    assert outputs["sequence_output"].shape == (3, 10, 16)
    assert outputs["pooled_output"].shape == (3, 16)
    assert np.all(np.abs(outputs["pooled_output"].numpy()) <= 1.0)


def test_layers_share_one_set_of_weights():
    def replace(**changes) -> AlbertConfig:
        return AlbertConfig(**{**TINY.__dict__, **changes})

    shallow, deep = build(replace(num_layers=1)), build(replace(num_layers=6))
    assert len(deep.weights) == len(shallow.weights)
    assert deep.count_params() == shallow.count_params()
    # Depth still counts: the same weights applied more often give other outputs.
    deep.set_weights(shallow.get_weights())
    inputs = random_inputs(2, 8)
    assert not np.allclose(shallow(inputs)["sequence_output"], deep(inputs)["sequence_output"])


def test_mixed_precision_keeps_float32_weights_and_layer_norms():
    reference = randomize(build())
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        encoder = build()
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    encoder.set_weights(reference.get_weights())
    inputs = random_inputs(2, 8)
    outputs = encoder(inputs)
    assert outputs["sequence_output"].dtype == tf.bfloat16
    assert {w.dtype for w in encoder.weights} == {tf.float32}
    assert encoder.embeddings.tables.layer_norm.compute_dtype == "float32"
    # The block's fused LayerNorm takes and returns bfloat16 but normalizes in float32:
    # its output is the float32 result rounded once to bfloat16 (give or take that unit).
    layer_norm = encoder.shared_block.output_layer_norm
    residual, update = (tf.random.stateless_normal([4, layer_norm.gamma.shape[0]], [seed, 0]) for seed in (1, 2))
    fused = layer_norm(tf.cast(residual, tf.bfloat16), tf.cast(update, tf.bfloat16))
    summed = tf.cast(tf.cast(residual, tf.bfloat16), tf.float32) + tf.cast(tf.cast(update, tf.bfloat16), tf.float32)
    mean, variance = tf.nn.moments(summed, axes=[-1], keepdims=True)
    expected = (summed - mean) * tf.math.rsqrt(variance + layer_norm.epsilon) * layer_norm.gamma + layer_norm.beta
    assert fused.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(fused, tf.float32), expected, rtol=2**-8, atol=1e-6)
    np.testing.assert_allclose(
        tf.cast(outputs["pooled_output"], tf.float32), reference(inputs)["pooled_output"], atol=0.1
    )


def test_unsupported_activation_is_named():
    config = albert_smoke.get_config()
    config.model.vocab_path = "spiece.model"
    config.model.albert.hidden_act = "relu"
    with pytest.raises(ConfigError, match=r"--config.model.albert.hidden_act='relu': expected one of gelu_new, gelu"):
        parse(config)


def test_hugging_face_format_round_trip_is_exact(tmp_path, spiece_path):
    encoder = randomize(build())
    convert_hf.save_pretrained(encoder, spiece_path, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "spiece.model"]
    assert convert_hf.load_config(str(tmp_path)) == TINY
    restored = build(convert_hf.load_config(str(tmp_path)))
    convert_hf.load_weights(restored, str(tmp_path))
    inputs = random_inputs(2, 8)
    expected, actual = encoder(inputs), restored(inputs)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_array_equal(expected[key].numpy(), actual[key].numpy())


def hugging_face_forward(tensors: dict[str, np.ndarray], config: AlbertConfig, inputs: dict) -> np.ndarray:
    """Hugging Face AlbertModel's forward pass, written from its tensor names in numpy: the pooled output.

    Independent of the native layers, so a name map that round-trips but puts
    a tensor in the wrong place (say, the two LayerNorms swapped) fails against it.
    """
    layer = "encoder.albert_layer_groups.0.albert_layers.0"

    def dense(name: str, x: np.ndarray) -> np.ndarray:
        return x @ tensors[f"{name}.weight"].T + tensors[f"{name}.bias"]

    def norm(name: str, x: np.ndarray) -> np.ndarray:
        normalized = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + config.layer_norm_epsilon)
        return normalized * tensors[f"{name}.weight"] + tensors[f"{name}.bias"]

    def gelu(x: np.ndarray) -> np.ndarray:
        if config.hidden_act == "gelu":
            return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    ids, mask, types = (inputs[k].numpy() for k in ("input_word_ids", "input_mask", "input_type_ids"))
    batch, length = ids.shape
    hidden = (
        tensors["embeddings.word_embeddings.weight"][ids]
        + tensors["embeddings.position_embeddings.weight"][:length]
        + tensors["embeddings.token_type_embeddings.weight"][types]
    )
    hidden = dense("encoder.embedding_hidden_mapping_in", norm("embeddings.LayerNorm", hidden))
    heads, size = config.num_heads, config.hidden_size // config.num_heads
    for _ in range(config.num_layers):
        q, k, v = (
            dense(f"{layer}.attention.{n}", hidden).reshape(batch, length, heads, size).transpose(0, 2, 1, 3)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) - 1e9 * (1 - mask[:, None, None, :])
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, config.hidden_size)
        attended = norm(f"{layer}.attention.LayerNorm", hidden + dense(f"{layer}.attention.dense", context))
        ffn = dense(f"{layer}.ffn_output", gelu(dense(f"{layer}.ffn", attended)))
        hidden = norm(f"{layer}.full_layer_layer_norm", ffn + attended)
    return np.tanh(dense("pooler", hidden[:, 0]))


@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu"])
def test_exported_weights_compute_what_hugging_face_computes(tmp_path, spiece_path, hidden_act):
    config = AlbertConfig(**{**TINY.__dict__, "hidden_act": hidden_act})
    encoder = randomize(build(config))
    convert_hf.save_pretrained(encoder, spiece_path, str(tmp_path))
    tensors = {k: v.astype(np.float64) for k, v in load_file(tmp_path / hf_format.WEIGHTS_FILE).items()}
    inputs = random_inputs(2, 8)
    expected = hugging_face_forward(tensors, config, inputs)
    np.testing.assert_allclose(encoder(inputs)["pooled_output"].numpy(), expected, atol=2e-5)


def test_prefixed_pretraining_checkpoint_loads(tmp_path, spiece_path):
    """albert-base-v2's file spells names "albert.<name>" and carries the pre-training heads."""
    encoder = build()
    convert_hf.save_pretrained(encoder, spiece_path, str(tmp_path))
    weights = tmp_path / hf_format.WEIGHTS_FILE
    tensors = {f"albert.{name}": value for name, value in load_file(weights).items()}
    tensors["predictions.bias"] = np.zeros([TINY.vocab_size], np.float32)
    tensors["sop_classifier.classifier.weight"] = np.zeros([2, TINY.hidden_size], np.float32)
    save_file(tensors, weights)
    restored = build()
    convert_hf.load_weights(restored, str(tmp_path))
    inputs = random_inputs(2, 8)
    np.testing.assert_array_equal(encoder(inputs)["pooled_output"].numpy(), restored(inputs)["pooled_output"].numpy())


def test_shape_mismatch_and_missing_tensor_are_named(tmp_path, spiece_path):
    convert_hf.save_pretrained(build(), spiece_path, str(tmp_path))
    wider = AlbertConfig(**{**TINY.__dict__, "intermediate_size": 48})
    with pytest.raises(
        hf_format.WeightImportError,
        match=r"model\.safetensors: encoder\.albert_layer_groups\.0\.albert_layers\.0\.ffn\.weight has shape",
    ):
        convert_hf.load_weights(build(wider), str(tmp_path))
    weights = tmp_path / hf_format.WEIGHTS_FILE
    tensors = load_file(weights)
    del tensors["encoder.embedding_hidden_mapping_in.bias"]
    save_file(tensors, weights)
    with pytest.raises(hf_format.WeightImportError, match=r"lacks 1 .*encoder\.embedding_hidden_mapping_in\.bias"):
        convert_hf.load_weights(build(), str(tmp_path))


def test_unsupported_hugging_face_configs_are_named(tmp_path, spiece_path):
    convert_hf.save_pretrained(build(), spiece_path, str(tmp_path))
    config_path = tmp_path / hf_format.CONFIG_FILE
    original = config_path.read_text()
    for old, new, message in [
        ('"num_hidden_groups": 1', '"num_hidden_groups": 2', "num_hidden_groups 2 is not supported; expected 1"),
        ('"hidden_act": "gelu_new"', '"hidden_act": "relu"', "hidden_act 'relu' is not supported"),
        ('"model_type": "albert"', '"model_type": "bert"', "model_type 'bert' is not 'albert'"),
    ]:
        config_path.write_text(original.replace(old, new))
        with pytest.raises(hf_format.WeightImportError, match=f"config.json: {message}"):
            convert_hf.load_config(str(tmp_path))
    config_path.write_text(original.replace('"hidden_act": "gelu_new"', '"hidden_act": "gelu"'))
    assert convert_hf.load_config(str(tmp_path)).hidden_act == "gelu"


def test_tokenizer_adds_cls_sep_pads_and_masks(spiece_path):
    tokenizer = SentencePieceTokenizer(spiece_path, seq_length=12)
    processor = sentencepiece.SentencePieceProcessor(model_file=spiece_path)
    assert tokenizer.vocab_size == processor.get_piece_size()
    inputs = tokenizer(tf.constant(["A GREAT film.<br />", "the plot was " * 20]))
    ids, mask = inputs["input_word_ids"].numpy(), inputs["input_mask"].numpy()
    short = processor.encode("a great film.")  # lower-cased, markup removed
    expected_short = [processor.piece_to_id("[CLS]"), *short, processor.piece_to_id("[SEP]")]
    assert ids[0].tolist() == expected_short + [processor.piece_to_id("<pad>")] * (12 - len(expected_short))
    assert mask[0].tolist() == [1] * len(expected_short) + [0] * (12 - len(expected_short))
    # The long text keeps its head, still ends in [SEP] and fills every slot.
    assert ids[1].tolist() == expected_short[:1] + processor.encode("the plot was " * 20)[:10] + expected_short[-1:]
    assert mask[1].tolist() == [1] * 12
    assert inputs["input_type_ids"].numpy().tolist() == [[0] * 12] * 2
    assert tokenizer.lengths(tf.constant(["A GREAT film.", "the plot was " * 20])).numpy().tolist() == [
        len(expected_short),
        12,
    ]


class HubStyleAlbertPreprocessor(tf.Module):
    """Like TF Hub's albert_en_preprocess: `tokenize` gives [batch, tokens] (no word level), and
    `bert_pack_inputs` takes segments of that rank."""

    def __init__(self, spiece_path: str):
        super().__init__()
        with open(spiece_path, "rb") as f:
            self._tokenizer = tf_text.SentencepieceTokenizer(model=f.read(), out_type=tf.int32)
        self._cls, self._sep, self._pad = (int(i) for i in self._tokenizer.string_to_id(["[CLS]", "[SEP]", "<pad>"]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        return self._tokenizer.tokenize(tf.strings.lower(texts))

    @tf.function(
        input_signature=[[tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)], tf.TensorSpec([], tf.int32)]
    )
    def bert_pack_inputs(self, segments, seq_length):
        ids, type_ids = tf_text.combine_segments([segments[0][:, : seq_length - 2]], self._cls, self._sep)
        word_ids, mask = tf_text.pad_model_inputs(ids, seq_length, pad_value=self._pad)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, seq_length)
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": type_ids}


@pytest.mark.slow
def test_hub_albert_preprocessor_tokenizes_like_the_native_sentencepiece_tokenizer(tmp_path, spiece_path):
    """The hub path takes ALBERT's rank-2 `tokenize`, and truncates as the config says."""
    handle = str(tmp_path / "albert_preprocess")
    tf.saved_model.save(HubStyleAlbertPreprocessor(spiece_path), handle)
    texts = tf.constant(["a great film.", "the plot was " * 5 + "great, " * 5 + "and bad in the end", ""])
    for truncation in ("head", "tail", "head_tail"):
        hub = HubPreprocessor(handle, seq_length=12, truncation=Truncation(truncation, 0.5))(texts)
        native = SentencePieceTokenizer(spiece_path, seq_length=12, truncation=Truncation(truncation, 0.5))(texts)
        for key, value in native.items():
            np.testing.assert_array_equal(hub[key], value, err_msg=f"{truncation}: {key}")


def test_tokenizer_rejects_a_model_without_albert_pieces(tmp_path, spiece_path):
    prefix = tmp_path / "plain"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["a plain model without special pieces"] * 20),
        model_prefix=str(prefix),
        vocab_size=30,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    with pytest.raises(VocabularyError, match=r"plain\.model lacks the piece\(s\) \['\[CLS\]', '\[SEP\]', '<pad>'\]"):
        SentencePieceTokenizer(f"{prefix}.model", seq_length=8)
    with pytest.raises(VocabularyError, match="does not parse as a SentencePiece model"):
        SentencePieceTokenizer(str(tmp_path / "plain.vocab"), seq_length=8)


def test_task_builds_albert_from_a_pretrained_directory(tmp_path, spiece_path):
    encoder = randomize(build())
    convert_hf.save_pretrained(encoder, spiece_path, str(tmp_path))
    config = albert_smoke.get_config()
    config.model.pretrained_dir = str(tmp_path)
    config.data.seq_length = 2 * TINY.max_position_embeddings
    with pytest.raises(ConfigError, match="seq_length=32 exceeds the encoder's 16 position embeddings"):
        build_task(parse(config))
    config.data.seq_length = TINY.max_position_embeddings
    task = build_task(parse(config))
    model = task.build_model()
    # The spiece.model inside pretrained_dir is the vocabulary when vocab_path is empty.
    inputs = task.build_tokenizer()(tf.constant(["A great film.", "A dull plot."]))
    for imported, original in zip(model.encoder.get_weights(), encoder.get_weights()):
        np.testing.assert_array_equal(imported, original)
    # The task's encoder computes [CLS] alone in its last layer: the same up to rounding.
    np.testing.assert_allclose(model.encoder(inputs)["pooled_output"], encoder(inputs)["pooled_output"], atol=1e-6)


@pytest.mark.slow
def test_albert_smoke_run_trains_exports_and_serves(tmp_path, monkeypatch, spiece_path, imdb_dir):
    monkeypatch.setattr(conftest, "SMOKE_CONFIG", ALBERT_SMOKE_CONFIG)
    model_dir = tmp_path / "run"
    log = check_ok(
        run_trainer(model_dir, spiece_path, imdb_dir, "--strategy=one_device", "--config.train.steps=10")
    ).stderr
    assert "Model: albert encoder" in log
    exports = sorted((model_dir / "export").iterdir())
    assert [p.name for p in exports] == ["10"]
    texts = ["A wonderful, moving film.", "Dull, boring and awful."]
    served = serve_in_fresh_process(exports[0], texts, cwd=tmp_path)
    np.testing.assert_allclose(served, in_process_probabilities(model_dir, texts), atol=1e-5)
