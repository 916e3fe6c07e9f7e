"""Backends this project publishes, by name and class: used only to tell a user
which distribution to install. Core never imports them."""

KNOWN_BACKENDS: dict[str, str] = {
    "concurrent": "rhapsody-concurrent",
    "dask": "rhapsody-dask",
    "dragon": "rhapsody-dragon",
    "dragon_v3": "rhapsody-dragon",
    "dragon_v2": "rhapsody-dragon",
    "dragon_v1": "rhapsody-dragon",
    "radical_pilot": "rhapsody-radical",
    "noop": "rhapsody-core",
}

KNOWN_CLASSES: dict[str, str] = {
    "ConcurrentExecutionBackend": "concurrent",
    "DaskExecutionBackend": "dask",
    "DragonExecutionBackend": "dragon",
    "DragonExecutionBackendV3": "dragon_v3",
    "DragonExecutionBackendV2": "dragon_v2",
    "DragonExecutionBackendV1": "dragon_v1",
    "DragonBatchExecutionBackend": "dragon_v3",
    "DragonPoolExecutionBackend": "dragon_v2",
    "DragonProcessExecutionBackend": "dragon_v1",
    "RadicalExecutionBackend": "radical_pilot",
    "NoopExecutionBackend": "noop",
}

DEFAULT_BACKEND = "concurrent"
