"""An out-of-tree RHAPSODY backend, kept small on purpose."""
