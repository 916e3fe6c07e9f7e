"""``rhapsody report FILE``: a self-contained HTML page of a telemetry checkpoint."""
