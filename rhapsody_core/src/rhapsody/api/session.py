"""rhapsody-py's ``rhapsody.api.session``: RHAPSODY's Session."""

from rhapsody.session import Session

__all__ = ["Session"]
