"""Mixed precision, XLA and length bucketing change speed, not what the model learns."""

import logging
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from trainer import experiment
from trainer.tasks.base import Task
from trainer.tasks.registry import build_task
from trainer.training import precision as precision_lib

from conftest import check_ok, read_scalars, run_trainer

NO_DROPOUT = (
    "--config.model.bert.dropout_rate=0",
    "--config.model.bert.attention_dropout_rate=0",
    "--config.model.head_dropout_rate=0",
)
STEPS = ("--config.train.steps=12", "--config.train.log_every_steps=1", "--config.train.checkpoint_every_steps=100")


def losses(model_dir) -> np.ndarray:
    train = read_scalars(model_dir / "train")["loss"]
    return np.array([train[step] for step in sorted(train)])


def tiny_task(vocab_path: str, precision: str = "float32") -> Task:
    tf_keras.mixed_precision.set_global_policy(precision)
    config = experiment.default_config()
    config.model.pretrained_dir = ""
    config.model.vocab_path = vocab_path
    config.model.bert.update(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    config.model.bert.update(max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0)
    config.data.seq_length = 64
    return build_task(experiment.parse(config))


@pytest.fixture(scope="module")
def plain_float32_losses(tmp_path_factory, vocab_path, imdb_dir) -> np.ndarray:
    """The reference curve: float32, no XLA, no buckets (one run shared by the tests below)."""
    model_dir = tmp_path_factory.mktemp("plain_float32")
    flags = ("--config.train.jit_compile=false", "--config.train.precision=float32")
    check_ok(run_trainer(model_dir, vocab_path, imdb_dir, *NO_DROPOUT, *STEPS, *flags))
    return losses(model_dir)


@pytest.fixture
def float32_policy():
    yield
    tf_keras.mixed_precision.set_global_policy("float32")


def test_padding_to_any_bucket_length_gives_the_same_logits_and_gradients(vocab_path, float32_policy):
    task = tiny_task(vocab_path)
    model = task.build_model()
    texts = tf.constant(["a great film", "awful boring mess of a movie, the plot is dull and weak", ""])
    full = task.build_tokenizer()(texts)
    longest = int(tf.reduce_max(tf.reduce_sum(full["input_mask"], axis=1)))
    labels = tf.constant([1.0, 0.0, 1.0])

    def logits_and_gradients(length):
        features = {key: value[:, :length] for key, value in full.items()}
        with tf.GradientTape() as tape:
            logits = model(features, training=False)
            loss = tf.reduce_mean(task.per_example_loss(labels, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        return logits.numpy(), [tf.convert_to_tensor(g).numpy() for g in gradients]

    reference_logits, reference_gradients = logits_and_gradients(64)
    for length in (longest, 24, 40):
        logits, gradients = logits_and_gradients(length)
        np.testing.assert_allclose(logits, reference_logits, atol=1e-5)
        for got, want in zip(gradients, reference_gradients):
            if got.shape == want.shape:  # Position embeddings beyond `length` get no gradient rows.
                np.testing.assert_allclose(got, want, atol=1e-5)


def test_mixed_bfloat16_computes_matmuls_in_bfloat16_and_keeps_float32_where_it_matters(vocab_path, float32_policy):
    task = tiny_task(vocab_path, "mixed_bfloat16")
    model = task.build_model()
    features = task.build_tokenizer()(tf.constant(["a great film"]))
    assert model.encoder(features)["pooled_output"].dtype == tf.bfloat16
    assert model(features).dtype == tf.float32  # The logit, hence the loss.
    assert all(v.dtype == tf.float32 for v in model.variables)
    block = model.encoder.blocks[0]
    assert block.intermediate.compute_dtype == "bfloat16"
    hidden = model.encoder.embeddings(features["input_word_ids"], features["input_type_ids"])
    assert model.encoder.embeddings.layer_norm.compute_dtype == "float32" and hidden.dtype == tf.bfloat16
    assert block(hidden, features["input_mask"]).dtype == tf.bfloat16


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [
        ("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n", False),  # an AVX2-only AMD EPYC
        ("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", True),  # Cooper Lake and later Xeons
        ("flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n", True),  # Sapphire Rapids
        ("processor\t: 0\nBogoMIPS\t: 50.00\n", None),  # no flags line (an ARM kernel)
    ],
)
def test_cpu_bfloat16_support_is_read_from_the_cpu_flags(tmp_path, cpuinfo, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert precision_lib.cpu_has_bfloat16(str(path)) is expected
    assert precision_lib.cpu_has_bfloat16(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("native", [False, True, None])
def test_mixed_bfloat16_warns_only_on_a_cpu_known_to_emulate_it(monkeypatch, caplog, float32_policy, native):
    monkeypatch.setattr(precision_lib, "cpu_has_bfloat16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="absl"):
        precision_lib.set_policy("mixed_bfloat16")
        precision_lib.set_policy("float32")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert tf_keras.mixed_precision.global_policy().name == "float32"
    if native is False:
        assert len(warnings) == 1, warnings
        assert "--config.train.precision=mixed_bfloat16" in warnings[0]
        assert "--config.train.precision=float32" in warnings[0]
    else:
        assert warnings == []


@pytest.mark.slow
def test_xla_and_bucketing_train_the_same_losses_as_the_plain_graph(
    tmp_path, vocab_path, imdb_dir, plain_float32_losses
):
    xla = tmp_path / "xla"
    xla_run = check_ok(run_trainer(xla, vocab_path, imdb_dir, *NO_DROPOUT, *STEPS, "--config.train.jit_compile=true"))
    assert "XLA on" in xla_run.stderr
    np.testing.assert_allclose(losses(xla), plain_float32_losses, rtol=1e-4)

    # Same batches, padded to bucket lengths instead of seq_length: the loss curve stays.
    # (The fixture's reviews are 27-32 tokens, so with 4 buckets of a 64-token budget they
    # take the 32 bucket: every batch is cut to half the length.)
    long_plain = tmp_path / "long_plain"
    padded = ("--config.data.seq_length=64", "--config.model.bert.max_position_embeddings=64")
    check_ok(run_trainer(long_plain, vocab_path, imdb_dir, *NO_DROPOUT, *STEPS, *padded))
    bucketed = tmp_path / "bucketed"
    bucketed_run = check_ok(
        run_trainer(
            bucketed,
            vocab_path,
            imdb_dir,
            *NO_DROPOUT,
            *STEPS,
            *padded,
            "--config.data.num_buckets=4",
            "--config.train.jit_compile=true",
        )
    )
    assert "Compiled the train step for length 32" in bucketed_run.stderr
    np.testing.assert_allclose(losses(bucketed), losses(long_plain), rtol=1e-4)
    # One compilation per bucket length used, and no more after warm-up.
    compilations = re.search(r"Compilations after training: \{'train': (\d+), 'eval': (\d+)\}", bucketed_run.stderr)
    assert compilations and int(compilations.group(1)) == 1


@pytest.mark.slow
def test_mixed_precision_modes_train(tmp_path, vocab_path, imdb_dir, plain_float32_losses):
    for precision in ("mixed_bfloat16", "mixed_float16"):
        model_dir = tmp_path / precision
        process = check_ok(
            run_trainer(model_dir, vocab_path, imdb_dir, *NO_DROPOUT, *STEPS, f"--config.train.precision={precision}")
        )
        assert f"precision {precision}" in process.stderr
        curve = losses(model_dir)
        assert np.all(np.isfinite(curve))
        # Half-precision matmuls: close to float32 at the start, and learning alike.
        assert abs(curve[0] - plain_float32_losses[0]) < 0.02
        assert abs(curve[-1] - plain_float32_losses[-1]) < 0.1
