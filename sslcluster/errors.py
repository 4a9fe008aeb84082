"""User-facing errors: one clear line naming the file, key or value at fault."""


class SSLClusterError(Exception):
    """An error caused by the user's input or files; the CLI prints it as one line, without a traceback."""
