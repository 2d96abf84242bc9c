"""Installs the `trainer` package and its named experiment configs."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (_HERE / name).read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="bert-trainer",
    version="0.1.0",
    description="Distributed fine-tuning of BERT-family encoders for text classification.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["trainer", "trainer.*", "experiments", "configs"]),
    # Ranges; the README's install adds -c constraints.txt for the exact versions tested together.
    install_requires=_requirements("requirements.txt"),
    extras_require={"test": _requirements("requirements-test.txt")},
    # The same commands as python -m trainer.main, experiments.report and experiments.compare.
    entry_points={
        "console_scripts": [
            "bert-trainer = trainer.main:cli",
            "bert-trainer-prepare = trainer.prepare:cli",
            "bert-trainer-report = experiments.report:cli",
            "bert-trainer-compare = experiments.compare:cli",
        ]
    },
)
