"""rhapsody-py's module paths for backend classes
(``from rhapsody.backends.execution import DaskExecutionBackend``,
``from rhapsody.backends.execution.concurrent import ConcurrentExecutionBackend``).
Each name is looked up like ``rhapsody.backends.<Name>``: in the installed
plugins, with a message naming the distribution to install when it is missing.
"""

from rhapsody.backends import __getattr__ as __getattr__
