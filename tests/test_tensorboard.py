"""A real TensorBoard serves a finished run's curves over HTTP."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import subprocess_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_serves_training_loss_and_eval_accuracy(trained_run, tmp_path):
    port = free_port()
    log_path = tmp_path / "tensorboard.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                f"--logdir={trained_run.model_dir}",
                "--host=127.0.0.1",
                f"--port={port}",
                "--load_fast=false",
            ],
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}/data/plugin/scalars"
    try:
        wanted = {
            "train": {"loss", "accuracy", "learning_rate", "examples_per_second"},
            "eval": {"loss", "accuracy", "auc"},
        }
        tags: dict = {}
        deadline = time.time() + 90
        while time.time() < deadline and not all(wanted[run] <= set(tags.get(run, {})) for run in wanted):
            assert server.poll() is None, log_path.read_text()[-2000:]
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                tags = get_json(f"{base}/tags")
            time.sleep(0.5)
        for run, run_tags in wanted.items():
            assert run_tags <= set(tags.get(run, {})), tags

        def series(run: str, tag: str) -> dict[int, float]:
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            return {step: value for _, step, value in get_json(f"{base}/scalars?{query}")}

        train_loss = series("train", "loss")
        assert sorted(train_loss) == list(range(5, 61, 5))
        assert train_loss[60] < train_loss[5]
        eval_accuracy = series("eval", "accuracy")
        metrics = json.loads((trained_run.model_dir / "metrics.json").read_text())
        assert sorted(eval_accuracy) == [30, 60]
        assert abs(eval_accuracy[60] - metrics["validation"]["accuracy"]) < 1e-6
    finally:
        server.terminate()
        server.wait(timeout=30)
