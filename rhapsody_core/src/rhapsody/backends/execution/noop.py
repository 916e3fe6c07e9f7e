"""rhapsody-py's ``rhapsody.backends.execution.noop``: see `rhapsody.backends.execution`."""

from rhapsody.backends import __getattr__ as __getattr__
