"""Tools around the trainer: reports from finished runs, and experiments made of several runs.

They read what `trainer.main` writes (trainer/run_dir.py describes the
layout) or run it as a program; the engine imports nothing from here.
"""
