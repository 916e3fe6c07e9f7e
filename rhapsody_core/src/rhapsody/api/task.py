"""rhapsody-py's ``rhapsody.api.task``: RHAPSODY's task classes."""

from rhapsody.task import AITask, BaseTask, ComputeTask

__all__ = ["AITask", "BaseTask", "ComputeTask"]
