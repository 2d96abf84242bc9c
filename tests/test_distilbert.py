"""The native DistilBERT encoder, its Hugging Face weight import/export and its run through the trainer.

No DistilBERT checkpoint can be downloaded here: the tests write Hugging
Face-layout files themselves (names and shapes as `DistilBertModel` and
`DistilBertForSequenceClassification` save them) and check the encoder
against a numpy forward pass of Hugging Face's DistilBERT written below.
"""

import dataclasses
import json
import logging
import math
import pathlib

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
import tensorflow as tf

from configs import smoke
from trainer.experiment import parse
from trainer.models import hf_format
from trainer.models.distilbert import convert_hf
from trainer.models.distilbert.encoder import DistilBertConfig, DistilBertEncoder
from trainer.schema import ConfigError
from trainer.tasks.registry import build_task

from conftest import check_ok, in_process_probabilities, run_trainer, serve_in_fresh_process

HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 64, 40


@pytest.fixture(scope="module")
def tiny(vocab_path) -> DistilBertConfig:
    """A tiny DistilBERT over the fixture vocabulary."""
    with open(vocab_path) as f:
        vocab_size = sum(1 for line in f if line.strip())
    return DistilBertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        num_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=POSITIONS,
    )


def build(config: DistilBertConfig, pooled_output_only: bool = False) -> DistilBertEncoder:
    encoder = DistilBertEncoder(config, pooled_output_only=pooled_output_only)
    encoder(padded_inputs(config, 1, 8))
    return encoder


def randomize(encoder: DistilBertEncoder, seed: int = 1) -> DistilBertEncoder:
    """Random values for every weight, LayerNorm scales and biases included, so no two look alike."""
    rng = np.random.default_rng(seed)
    encoder.set_weights([rng.normal(0.0, 0.5, size=w.shape).astype(np.float32) for w in encoder.get_weights()])
    return encoder


def padded_inputs(config: DistilBertConfig, batch: int, length: int, seed: int = 0) -> dict[str, tf.Tensor]:
    """Random ids; row 0 is half padding, row 2 (if any) a quarter; type ids random (DistilBERT has none)."""
    rng = np.random.default_rng(seed)
    mask = np.ones([batch, length], np.int32)
    mask[0, length // 2 :] = 0
    if batch > 2:
        mask[2, length - length // 4 :] = 0
    return {
        "input_word_ids": tf.constant(rng.integers(5, config.vocab_size, size=(batch, length)), tf.int32),
        "input_mask": tf.constant(mask),
        "input_type_ids": tf.constant(rng.integers(0, 2, size=(batch, length)), tf.int32),
    }


def hugging_face_shapes(config: DistilBertConfig) -> dict[str, tuple[int, ...]]:
    """Every encoder tensor of a Hugging Face DistilBERT (without the "distilbert." prefix) and its shape.

    torch.nn.Linear keeps its weight as [out_features, in_features].
    """
    dim, hidden = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, dim),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, dim),
        "embeddings.LayerNorm.weight": (dim,),
        "embeddings.LayerNorm.bias": (dim,),
        "pre_classifier.weight": (dim, dim),
        "pre_classifier.bias": (dim,),
    }
    for i in range(config.num_layers):
        layer = f"transformer.layer.{i}"
        for name in ("q_lin", "k_lin", "v_lin", "out_lin"):
            shapes[f"{layer}.attention.{name}.weight"] = (dim, dim)
            shapes[f"{layer}.attention.{name}.bias"] = (dim,)
        for name in ("sa_layer_norm", "output_layer_norm"):
            shapes[f"{layer}.{name}.weight"] = (dim,)
            shapes[f"{layer}.{name}.bias"] = (dim,)
        shapes[f"{layer}.ffn.lin1.weight"] = (hidden, dim)
        shapes[f"{layer}.ffn.lin1.bias"] = (hidden,)
        shapes[f"{layer}.ffn.lin2.weight"] = (dim, hidden)
        shapes[f"{layer}.ffn.lin2.bias"] = (dim,)
    return shapes


def hugging_face_forward(
    tensors: dict[str, np.ndarray], config: DistilBertConfig, inputs: dict[str, tf.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """Hugging Face's DistilBERT forward pass in float64 numpy, from its tensor names: (hidden states, pooled).

    Written from the published architecture, not from the native layers, so a
    tensor loaded into the wrong place (say, sa_layer_norm and output_layer_norm
    swapped, or a Linear weight not transposed) shows as a different result.
    """
    t = {name: value.astype(np.float64) for name, value in tensors.items()}

    def linear(name: str, x: np.ndarray) -> np.ndarray:
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    def layer_norm(name: str, x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred**2).mean(axis=-1, keepdims=True)
        return centred / np.sqrt(variance + 1e-12) * t[f"{name}.weight"] + t[f"{name}.bias"]

    erf = np.vectorize(math.erf)

    ids, mask = inputs["input_word_ids"].numpy(), inputs["input_mask"].numpy()
    batch, length = ids.shape
    heads, head_dim = config.num_heads, config.hidden_size // config.num_heads
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][np.arange(length)]
    x = layer_norm("embeddings.LayerNorm", x)
    for i in range(config.num_layers):
        p = f"transformer.layer.{i}"

        def heads_first(y: np.ndarray) -> np.ndarray:  # [b, len, dim] -> [b, heads, len, head_dim]
            return y.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

        q = heads_first(linear(f"{p}.attention.q_lin", x)) / math.sqrt(head_dim)
        k = heads_first(linear(f"{p}.attention.k_lin", x))
        v = heads_first(linear(f"{p}.attention.v_lin", x))
        scores = q @ k.transpose(0, 1, 3, 2)
        scores = np.where(mask[:, None, None, :] == 0, -1e30, scores)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        context = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, config.hidden_size)
        sa_output = layer_norm(f"{p}.sa_layer_norm", linear(f"{p}.attention.out_lin", context) + x)
        inner = linear(f"{p}.ffn.lin1", sa_output)
        ffn_output = linear(f"{p}.ffn.lin2", 0.5 * inner * (1.0 + erf(inner / math.sqrt(2.0))))
        x = layer_norm(f"{p}.output_layer_norm", ffn_output + sa_output)
    pooled = np.maximum(linear("pre_classifier", x[:, 0]), 0.0)
    return x, pooled


def random_hugging_face_tensors(config: DistilBertConfig, seed: int = 7) -> dict[str, np.ndarray]:
    """A full set of Hugging Face-layout tensors with random values (LayerNorms away from 1 and 0 too)."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0.0, 0.5, size=shape).astype(np.float32) for name, shape in hugging_face_shapes(config).items()
    }


def hugging_face_config(config: DistilBertConfig, **changes) -> dict:
    """config.json as transformers writes it for a DistilBertForSequenceClassification."""
    values = {
        "_name_or_path": "distilbert-base-uncased",
        "activation": "gelu",
        "architectures": ["DistilBertForSequenceClassification"],
        "attention_dropout": config.attention_dropout_rate,
        "dim": config.hidden_size,
        "dropout": config.dropout_rate,
        "hidden_dim": config.intermediate_size,
        "initializer_range": config.initializer_range,
        "max_position_embeddings": config.max_position_embeddings,
        "model_type": "distilbert",
        "n_heads": config.num_heads,
        "n_layers": config.num_layers,
        "pad_token_id": 0,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "sinusoidal_pos_embds": False,
        "tie_weights_": True,
        "torch_dtype": "float32",
        "transformers_version": "4.40.0",
        "vocab_size": config.vocab_size,
    }
    values.update(changes)
    return values


def write_sequence_classifier(model_dir, config: DistilBertConfig, tensors: dict[str, np.ndarray]) -> None:
    """A DistilBertForSequenceClassification directory: encoder under "distilbert.", head at the top level."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / hf_format.CONFIG_FILE).write_text(json.dumps(hugging_face_config(config)))
    file_tensors = {
        (name if name.startswith("pre_classifier.") else f"distilbert.{name}"): value for name, value in tensors.items()
    }
    file_tensors["classifier.weight"] = np.ones([2, config.hidden_size], np.float32)
    file_tensors["classifier.bias"] = np.zeros([2], np.float32)
    save_file(file_tensors, str(model_dir / hf_format.WEIGHTS_FILE))


def unused_tensor_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not used by the encoder" in r.getMessage()]


# ----- the encoder -----


def test_output_shapes_relu_pooled_output_and_no_token_types(tiny):
    encoder = randomize(build(tiny))
    inputs = padded_inputs(tiny, 3, 10)
    outputs = encoder(inputs)
    assert set(outputs) == {"sequence_output", "pooled_output"}
    assert outputs["sequence_output"].shape == (3, 10, HIDDEN)
    assert outputs["pooled_output"].shape == (3, HIDDEN)
    pooled = outputs["pooled_output"].numpy()
    assert pooled.min() == 0.0 and pooled.max() > 0.0  # ReLU: some units cut to zero, some not
    assert encoder.embeddings.type_embeddings is None
    # Type ids are read but have no table: other values change nothing.
    other_types = {**inputs, "input_type_ids": 1 - inputs["input_type_ids"]}
    np.testing.assert_array_equal(encoder(other_types)["sequence_output"], outputs["sequence_output"])


def test_loaded_weights_compute_what_hugging_face_computes(tmp_path, tiny, caplog):
    """A checkpoint written by the test in Hugging Face's layout, loaded, against the numpy reference."""
    tensors = random_hugging_face_tensors(tiny)
    write_sequence_classifier(tmp_path, tiny, tensors)
    assert convert_hf.load_config(str(tmp_path)) == tiny
    inputs = padded_inputs(tiny, 3, 12)
    expected_sequence, expected_pooled = hugging_face_forward(tensors, tiny, inputs)
    mask = inputs["input_mask"].numpy().astype(bool)

    encoder = build(tiny)
    with caplog.at_level(logging.WARNING, logger="absl"):
        convert_hf.load_weights(encoder, str(tmp_path))
    assert not unused_tensor_warnings(caplog)  # the classifier head is skipped silently
    outputs = encoder(inputs, training=False)
    np.testing.assert_allclose(outputs["sequence_output"].numpy()[mask], expected_sequence[mask], atol=1e-5)
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), expected_pooled, atol=1e-5)

    # The classifier's encoder (the last block on [CLS] alone) computes the same pooled output.
    pooled_only = build(tiny, pooled_output_only=True)
    convert_hf.load_weights(pooled_only, str(tmp_path))
    outputs = pooled_only(inputs, training=False)
    assert set(outputs) == {"pooled_output"}
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), expected_pooled, atol=1e-5)


def test_exported_weights_compute_what_hugging_face_computes(tmp_path, tiny, vocab_path):
    """The other direction: a randomized native encoder, saved, read by the numpy reference."""
    encoder = randomize(build(tiny), seed=3)
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    tensors = load_file(tmp_path / hf_format.WEIGHTS_FILE)
    inputs = padded_inputs(tiny, 3, 12, seed=1)
    expected_sequence, expected_pooled = hugging_face_forward(tensors, tiny, inputs)
    mask = inputs["input_mask"].numpy().astype(bool)
    outputs = encoder(inputs, training=False)
    np.testing.assert_allclose(outputs["sequence_output"].numpy()[mask], expected_sequence[mask], atol=1e-5)
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), expected_pooled, atol=1e-5)


def test_dropout_sits_where_distilbert_puts_it(tiny):
    """Embeddings, attention weights and the feed-forward output; none on the attention output."""
    encoder = build(dataclasses.replace(tiny, dropout_rate=0.2, attention_dropout_rate=0.3))
    assert encoder.embeddings.dropout.rate == 0.2
    for block in encoder.blocks:
        assert block.attention.dropout_rate == 0.3
        assert block.attention_layer_norm.dropout_rate == 0.0
        assert block.output_layer_norm.dropout_rate == 0.2
        assert not block.approximate_gelu


def test_training_mode_without_dropout_computes_what_hugging_face_computes(tmp_path, tiny, vocab_path):
    """The training kernels (exact GELU, masked softmax, residual LayerNorm) follow the same math."""
    config = dataclasses.replace(tiny, dropout_rate=0.0, attention_dropout_rate=0.0)
    encoder = randomize(build(config), seed=5)
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    inputs = padded_inputs(config, 3, 12, seed=2)
    expected_sequence, expected_pooled = hugging_face_forward(
        load_file(tmp_path / hf_format.WEIGHTS_FILE), config, inputs
    )
    mask = inputs["input_mask"].numpy().astype(bool)
    outputs = encoder(inputs, training=True)
    np.testing.assert_allclose(outputs["sequence_output"].numpy()[mask], expected_sequence[mask], atol=1e-5)
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), expected_pooled, atol=1e-5)


# ----- Hugging Face format -----


def test_hugging_face_format_round_trip_is_exact(tmp_path, tiny, vocab_path):
    encoder = randomize(build(tiny))
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert (tmp_path / "vocab.txt").read_text() == pathlib.Path(vocab_path).read_text()

    hf_config = json.loads((tmp_path / hf_format.CONFIG_FILE).read_text())
    assert hf_config["model_type"] == "distilbert"
    assert hf_config["activation"] == "gelu"
    assert (hf_config["dim"], hf_config["n_layers"], hf_config["n_heads"], hf_config["hidden_dim"]) == (
        HIDDEN,
        LAYERS,
        HEADS,
        INTERMEDIATE,
    )
    assert convert_hf.load_config(str(tmp_path)) == tiny

    # Names and shapes as Hugging Face's DistilBertModel (plus pre_classifier) spells them.
    tensors = load_file(tmp_path / hf_format.WEIGHTS_FILE)
    assert {name: tuple(value.shape) for name, value in tensors.items()} == hugging_face_shapes(tiny)
    assert {value.dtype for value in tensors.values()} == {np.dtype(np.float32)}
    block = encoder.blocks[0]
    q_lin = tensors["transformer.layer.0.attention.q_lin.weight"]
    assert q_lin.shape == (HIDDEN, HIDDEN)
    np.testing.assert_array_equal(q_lin, block.attention.query.kernel.numpy().T)
    np.testing.assert_array_equal(tensors["transformer.layer.0.attention.k_lin.bias"], block.attention.key.bias)
    lin1 = tensors["transformer.layer.0.ffn.lin1.weight"]
    assert lin1.shape == (INTERMEDIATE, HIDDEN)
    np.testing.assert_array_equal(lin1, block.intermediate.kernel.numpy().T)
    np.testing.assert_array_equal(
        tensors["transformer.layer.1.sa_layer_norm.weight"], encoder.blocks[1].attention_layer_norm.gamma
    )
    np.testing.assert_array_equal(
        tensors["transformer.layer.1.output_layer_norm.bias"], encoder.blocks[1].output_layer_norm.beta
    )
    np.testing.assert_array_equal(tensors["embeddings.word_embeddings.weight"], encoder.embeddings.word_embeddings)
    np.testing.assert_array_equal(tensors["pre_classifier.weight"], encoder.pooler.kernel.numpy().T)

    restored = build(convert_hf.load_config(str(tmp_path)))
    convert_hf.load_weights(restored, str(tmp_path))
    assert len(restored.weights) == len(encoder.weights)
    for original, loaded in zip(encoder.weights, restored.weights):
        np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=original.name)
    inputs = padded_inputs(tiny, 3, 12)
    expected, actual = encoder(inputs), restored(inputs)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_array_equal(actual[key].numpy(), expected[key].numpy())


def test_prefixed_checkpoint_with_heads_and_buffers_loads(tmp_path, tiny, vocab_path, caplog):
    """Hugging Face base and task checkpoints put the encoder under "distilbert." beside their heads."""
    encoder = randomize(build(tiny))
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    weights = tmp_path / hf_format.WEIGHTS_FILE
    tensors = {
        (name if name.startswith("pre_classifier.") else f"distilbert.{name}"): value
        for name, value in load_file(weights).items()
    }
    tensors["distilbert.embeddings.position_ids"] = np.arange(POSITIONS, dtype=np.int64)[None]
    tensors["classifier.weight"] = np.zeros([2, HIDDEN], np.float32)
    tensors["classifier.bias"] = np.zeros([2], np.float32)
    tensors["vocab_transform.weight"] = np.zeros([HIDDEN, HIDDEN], np.float32)
    tensors["vocab_layer_norm.weight"] = np.ones([HIDDEN], np.float32)
    tensors["vocab_projector.bias"] = np.zeros([tiny.vocab_size], np.float32)
    save_file(tensors, str(weights))

    restored = build(tiny)
    with caplog.at_level(logging.WARNING, logger="absl"):
        convert_hf.load_weights(restored, str(tmp_path))
    assert not unused_tensor_warnings(caplog)
    for original, loaded in zip(encoder.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(loaded, original)

    # A tensor the encoder does not know is loaded around, with a warning naming it.
    tensors["distilbert.transformer.layer.9.ffn.lin1.bias"] = np.zeros([INTERMEDIATE], np.float32)
    save_file(tensors, str(weights))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="absl"):
        convert_hf.load_weights(build(tiny), str(tmp_path))
    (warning,) = unused_tensor_warnings(caplog)
    assert "distilbert.transformer.layer.9.ffn.lin1.bias" in warning


def test_base_checkpoint_without_pre_classifier_leaves_it_random(tmp_path, tiny, vocab_path, caplog):
    """DistilBertModel has no pre_classifier: the encoder loads, the pre-classifier keeps its initial values."""
    encoder = randomize(build(tiny))
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    weights = tmp_path / hf_format.WEIGHTS_FILE
    tensors = {name: value for name, value in load_file(weights).items() if not name.startswith("pre_classifier.")}
    save_file(tensors, str(weights))

    restored = build(tiny)
    initial_kernel, initial_bias = restored.pooler.kernel.numpy(), restored.pooler.bias.numpy()
    with caplog.at_level(logging.WARNING, logger="absl"):
        convert_hf.load_weights(restored, str(tmp_path))
    assert any("pre_classifier" in r.getMessage() and "random" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(restored.pooler.kernel.numpy(), initial_kernel)
    np.testing.assert_array_equal(restored.pooler.bias.numpy(), initial_bias)
    pre_classifier = {id(v) for v in restored.pooler.weights}
    for original, loaded in zip(encoder.weights, restored.weights):
        if id(loaded) not in pre_classifier:
            np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=original.name)
    inputs = padded_inputs(tiny, 2, 8)
    np.testing.assert_array_equal(restored(inputs)["sequence_output"], encoder(inputs)["sequence_output"])


def test_shape_mismatch_and_missing_tensor_are_named(tmp_path, tiny, vocab_path):
    convert_hf.save_pretrained(build(tiny), vocab_path, str(tmp_path))
    wider = dataclasses.replace(tiny, intermediate_size=48)
    with pytest.raises(
        hf_format.WeightImportError, match=r"model\.safetensors: transformer\.layer\.0\.ffn\.lin1\.weight has shape"
    ):
        convert_hf.load_weights(build(wider), str(tmp_path))

    # In a prefixed file the message spells the name as the file does.
    weights = tmp_path / hf_format.WEIGHTS_FILE
    tensors = {f"distilbert.{name}": value for name, value in load_file(weights).items()}
    tensors["distilbert.transformer.layer.1.attention.v_lin.bias"] = np.zeros([HIDDEN + 1], np.float32)
    save_file(tensors, str(weights))
    with pytest.raises(
        hf_format.WeightImportError, match=r"distilbert\.transformer\.layer\.1\.attention\.v_lin\.bias has shape"
    ):
        convert_hf.load_weights(build(tiny), str(tmp_path))

    del tensors["distilbert.transformer.layer.1.attention.v_lin.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(
        hf_format.WeightImportError, match=r"lacks 1 encoder tensor\(s\).*transformer\.layer\.1\.attention\.v_lin\.bias"
    ):
        convert_hf.load_weights(build(tiny), str(tmp_path))


def test_shape_mismatch_reports_the_shape_stored_in_the_file(tmp_path, tiny, vocab_path):
    """lin1.weight is stored [hidden_dim, dim] = (64, 32): the message must say so, not its transpose."""
    convert_hf.save_pretrained(build(tiny), vocab_path, str(tmp_path))
    assert load_file(tmp_path / hf_format.WEIGHTS_FILE)["transformer.layer.0.ffn.lin1.weight"].shape == (64, 32)
    wider = dataclasses.replace(tiny, intermediate_size=48)
    with pytest.raises(hf_format.WeightImportError, match=r"ffn\.lin1\.weight has shape \(64, 32\)"):
        convert_hf.load_weights(build(wider), str(tmp_path))


def test_unsupported_hugging_face_configs_are_named(tmp_path, tiny):
    config_path = tmp_path / hf_format.CONFIG_FILE
    for changes, message in [
        ({"activation": "relu"}, "activation 'relu' is not supported"),
        ({"model_type": "bert"}, "model_type 'bert' is not 'distilbert'"),
    ]:
        config_path.write_text(json.dumps(hugging_face_config(tiny, **changes)))
        with pytest.raises(hf_format.WeightImportError, match=f"config.json: {message}"):
            convert_hf.load_config(str(tmp_path))
    values = hugging_face_config(tiny)
    del values["n_heads"]
    config_path.write_text(json.dumps(values))
    with pytest.raises(hf_format.WeightImportError, match="config.json lacks the key 'n_heads'"):
        convert_hf.load_config(str(tmp_path))
    # Without "activation", Hugging Face's default (gelu) applies.
    values = hugging_face_config(tiny)
    del values["activation"]
    config_path.write_text(json.dumps(values))
    assert convert_hf.load_config(str(tmp_path)) == tiny


# ----- through the trainer -----


def distilbert_smoke_config(**model_values):
    config = smoke.get_config()
    config.model.encoder = "distilbert"
    config.model.pretrained_dir = ""
    config.model.vocab_path = ""
    for key, value in model_values.items():
        config.model[key] = value
    return config


def test_task_builds_distilbert_from_a_pretrained_directory(tmp_path, tiny, vocab_path):
    encoder = randomize(build(tiny))
    convert_hf.save_pretrained(encoder, vocab_path, str(tmp_path))
    config = distilbert_smoke_config(pretrained_dir=str(tmp_path))
    config.data.seq_length = POSITIONS + 1
    with pytest.raises(ConfigError, match=f"seq_length={POSITIONS + 1} exceeds the encoder's {POSITIONS} position"):
        build_task(parse(config))

    config.data.seq_length = POSITIONS
    task = build_task(parse(config))
    assert task.encoder.describe() == "distilbert encoder"
    assert task.encoder.config == tiny
    model = task.build_model()
    assert len(model.encoder.weights) == len(encoder.weights)
    for original, imported in zip(encoder.weights, model.encoder.weights):
        np.testing.assert_array_equal(imported.numpy(), original.numpy(), err_msg=original.name)
    # The vocab.txt inside pretrained_dir is the vocabulary when vocab_path is empty.
    inputs = task.build_tokenizer()(tf.constant(["A great film.", "A dull, boring plot."]))
    np.testing.assert_allclose(model.encoder(inputs)["pooled_output"], encoder(inputs)["pooled_output"], atol=1e-5)


def test_random_encoder_longer_than_its_positions_is_refused(vocab_path):
    config = distilbert_smoke_config(vocab_path=vocab_path)
    config.model.distilbert.max_position_embeddings = 16
    config.data.seq_length = 32
    with pytest.raises(
        ConfigError,
        match=r"seq_length=32 exceeds the encoder's 16 position embeddings "
        r"\(--config\.model\.distilbert\.max_position_embeddings\)",
    ):
        build_task(parse(config))


@pytest.mark.slow
def test_distilbert_smoke_run_trains_exports_and_serves(tmp_path, vocab_path, imdb_dir):
    model_dir = tmp_path / "run"
    sizes = {
        "hidden_size": HIDDEN,
        "num_layers": LAYERS,
        "num_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 64,
    }
    flags = [f"--config.model.distilbert.{key}={value}" for key, value in sizes.items()]
    process = run_trainer(
        model_dir,
        vocab_path,
        imdb_dir,
        "--strategy=one_device",
        "--config.train.steps=10",
        "--config.model.encoder=distilbert",
        "--config.model.pretrained_dir=",
        *flags,
    )
    log = check_ok(process).stderr
    assert "Model: distilbert encoder" in log
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["model"]["encoder"] == "distilbert"
    assert {key: saved["model"]["distilbert"][key] for key in sizes} == sizes
    exports = sorted((model_dir / "export").iterdir())
    assert [p.name for p in exports] == ["10"]
    texts = ["A wonderful, moving film.", "Dull, boring and awful."]
    served = serve_in_fresh_process(exports[0], texts, cwd=tmp_path)
    np.testing.assert_allclose(served, in_process_probabilities(model_dir, texts), atol=1e-5)
