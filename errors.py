"""How every script here reports bad input: one line, no traceback.

A UserError is a mistake the user can fix (a flag, a data file, a checkpoint). Library code
raises it (or ValueError, its base class) with a message naming the file, line or flag; each
script's main() turns it into `SCRIPT: error: MESSAGE` on stderr and a non-zero exit via `fail`.
"""


class UserError(ValueError):
    """Bad input from the user: printed as one line, never as a traceback."""


def one_line(error, limit=300):
    """An exception (or text) as one short line: library messages can span pages."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def json_error(e):
    """A json.JSONDecodeError as "MESSAGE at column N": some of its messages end in a dangling
    " at" ("Unterminated string starting at"), which would read "at at column"."""
    return f"{e.msg.removesuffix(' at')} at column {e.colno}"


def fail(script, error):
    """The SystemExit that ends `script` with its one-line error message (raise it `from None`)."""
    return SystemExit(f"{script}: error: {one_line(error, limit=2000)}")

