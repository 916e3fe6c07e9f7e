"""The backend registry: entry points -> pluggy -> typed backend records."""

from rhapsody.registry.manager import (
    ENTRY_POINT_GROUP,
    BrokenPlugin,
    PluginManager,
    Registry,
    discover_backends,
    get_plugin_manager,
    get_registry,
    reset_plugins,
)
from rhapsody.registry.records import BackendRecord

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendRecord",
    "BrokenPlugin",
    "PluginManager",
    "Registry",
    "discover_backends",
    "get_plugin_manager",
    "get_registry",
    "reset_plugins",
]
