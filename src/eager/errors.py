class EagerError(Exception):
    """A user-facing error: its message is one clear line."""
