"""User-facing errors: one clear line naming the file, key or value at fault."""


class SSLClusterError(Exception):
    """An error caused by the user's input or files; the CLI prints it as one line, without a traceback."""


class TrainingInterrupted(SSLClusterError):
    """Training was stopped by a signal (SIGTERM) after saving ``last.ckpt``; exit status 128 + 15, as a
    scheduler expects of a terminated job."""

    exit_code = 143
