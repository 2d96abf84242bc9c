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


def get_json(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
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
                # Above the run, as for a sweep (runs/): the HParams tab lists each run under it.
                f"--logdir={trained_run.model_dir.parent}",
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
        name = trained_run.model_dir.name
        wanted = {
            f"{name}/train": {"loss", "accuracy", "learning_rate", "examples_per_second"},
            f"{name}/eval": {"loss", "accuracy", "auc"},
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

        train_loss = series(f"{name}/train", "loss")
        assert sorted(train_loss) == list(range(5, 61, 5))
        assert train_loss[60] < train_loss[5]
        eval_accuracy = series(f"{name}/eval", "accuracy")
        metrics = json.loads((trained_run.model_dir / "metrics.json").read_text())
        assert sorted(eval_accuracy) == [30, 60]
        assert abs(eval_accuracy[60] - metrics["validation"]["accuracy"]) < 1e-6

        # The HParams tab: the run's hyperparameters and its latest eval/ scalars.
        hparams = f"http://127.0.0.1:{port}/data/plugin/hparams"
        statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        query = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 10}
        groups = get_json(f"{hparams}/session_groups", query)["sessionGroups"]
        assert [group["name"] for group in groups] == [name]
        config = json.loads((trained_run.model_dir / "config.json").read_text())
        values = groups[0]["hparams"]
        assert values["train.steps"] == 60 and values["model.encoder"] == config["model"]["encoder"]
        assert values["train.learning_rate"] == config["train"]["learning_rate"]
        assert values["data.seq_length"] == config["data"]["seq_length"]
        latest = {(m["name"]["group"], m["name"]["tag"]): m for m in groups[0]["metricValues"]}
        assert latest[("eval", "accuracy")]["trainingStep"] == 60
        assert abs(latest[("eval", "accuracy")]["value"] - metrics["validation"]["accuracy"]) < 1e-6
        experiment_info = get_json(f"{hparams}/experiment", {"experimentName": ""})
        assert {"train.learning_rate", "train.batch_size", "task.type"} <= {
            info["name"] for info in experiment_info["hparamInfos"]
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
