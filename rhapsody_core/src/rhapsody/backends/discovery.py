"""rhapsody-py's ``rhapsody.backends.discovery``."""

from rhapsody.backends import discover_backends, get_backend
from rhapsody.registry.by_name import BackendRegistry

__all__ = ["BackendRegistry", "discover_backends", "get_backend"]
