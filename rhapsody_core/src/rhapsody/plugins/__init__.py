"""Plugin discovery: entry points -> pluggy -> typed backend records."""

from rhapsody.plugins.manager import (
    ENTRY_POINT_GROUP,
    BrokenPlugin,
    Registry,
    discover_backends,
    get_plugin_manager,
    get_registry,
    reset_plugins,
)
from rhapsody.plugins.records import BackendRecord

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendRecord",
    "BrokenPlugin",
    "Registry",
    "discover_backends",
    "get_plugin_manager",
    "get_registry",
    "reset_plugins",
]
