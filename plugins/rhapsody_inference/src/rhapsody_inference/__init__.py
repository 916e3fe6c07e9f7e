"""RHAPSODY's inference backend: `AITask`s on OpenAI-compatible servers."""

from rhapsody_inference.backend import InferenceBackend
from rhapsody_inference.endpoints import Endpoint
from rhapsody_inference.errors import InferenceError
from rhapsody_inference.models import packaged_model
from rhapsody_inference.server import ManagedServer, llama_cpp_server

__all__ = ["Endpoint", "InferenceBackend", "InferenceError", "ManagedServer", "llama_cpp_server", "packaged_model"]
