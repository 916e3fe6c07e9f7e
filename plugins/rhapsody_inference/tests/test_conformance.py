"""The AI conformance suite from rhapsody.testing, against a llama.cpp server the
backend starts itself (the managed path) with the real SmolLM2 model."""

from __future__ import annotations

from serving import MODEL, model_path

from rhapsody.testing import AIBackendConformance
from rhapsody_inference import InferenceBackend, llama_cpp_server


class TestInferenceConformance(AIBackendConformance):
    model = MODEL
    reports_worker = True  # the endpoint that answered

    def make_backend(self) -> InferenceBackend:
        return InferenceBackend(servers=llama_cpp_server(model_path(), MODEL), name="llama")
