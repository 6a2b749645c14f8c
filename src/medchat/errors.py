"""The one exception type that means "the user gave us something wrong"."""


class MedchatError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2.

    The message must name the file (and row/field where known) and say what to do.
    """
