"""rhapsody-py's ``rhapsody.logger``: `rhapsody.log.enable_logging`."""

from rhapsody.log import enable_logging

__all__ = ["enable_logging"]
