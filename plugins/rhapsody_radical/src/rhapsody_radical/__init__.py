"""rhapsody-radical: RHAPSODY tasks in a RADICAL-Pilot pilot."""

__version__ = "0.1.0"
