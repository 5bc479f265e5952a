"""The one exception type for mistakes a user can fix (bad input, bad config, missing files).

Its message is a single line that names the file, key or value and says what was expected;
the command line prints it without a traceback.
"""


class MateffnetError(Exception):
    pass


def error_line(error: BaseException, default: str | None = None) -> str:
    """The first line of an error's message, for quoting it inside one of ours; without a message,
    `default` (the error's type name when None)."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if default is None else default
