"""User-facing errors: one clear line, no traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line."""
