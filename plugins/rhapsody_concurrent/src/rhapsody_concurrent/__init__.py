"""rhapsody-concurrent: the local backend RHAPSODY uses when you name none."""

__version__ = "0.1.0"
