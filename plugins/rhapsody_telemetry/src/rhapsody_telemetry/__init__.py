"""rhapsody-telemetry: the plugin behind ``rhapsody.telemetry`` and
``Session.start_telemetry``. Users import from ``rhapsody.telemetry``."""
