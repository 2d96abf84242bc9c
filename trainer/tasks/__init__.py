"""Fine-tuning tasks: the Task interface and its implementations, registered by `task.type`."""
