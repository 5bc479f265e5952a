"""The one exception type for mistakes a user can fix (bad input, bad config, missing files).

Its message is a single line that names the file, key or value and says what was expected;
the command line prints it without a traceback.
"""


class MateffnetError(Exception):
    pass
