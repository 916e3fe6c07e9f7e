"""What core does for every backend: admission of tasks, the state machine
(`tracker`), and the `Backend` object users hold around a plugin's engine."""
