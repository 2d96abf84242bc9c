"""The distributed training engine: steps, loop, evaluation, checkpoints, optimizer and precision."""
