"""rhapsody-py's ``rhapsody.backends.execution.radical_pilot``: see `rhapsody.backends.execution`."""

from rhapsody.backends import __getattr__ as __getattr__
