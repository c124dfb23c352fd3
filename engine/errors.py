"""Errors the engine reports to users.

Every error that comes from bad input derives from `BadInput`; the CLI prints its message as one line on stderr
and exits with code 2. Messages name the file (and line/column where there is one) and the problem.
"""


class NncertError(Exception):
    """Base class of nncert's errors."""


class BadInput(NncertError):
    """Malformed model, spec or data, or a bad argument. CLI exit code 2."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, col: int | None = None):
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
                if col is not None:
                    where += f":{col}"
            where += ": "
        super().__init__(where + message)
        self.path, self.line, self.col = path, line, col


class BadSetting(BadInput, ValueError):
    """An environment setting (NNCERT_KERNELS, NNCERT_THREADS, NNCERT_SIMD) with a value nncert does not accept."""


class UnsupportedOp(BadInput):
    """An op (or op variant) that the importer or a domain has no rule for; never silently approximated."""


class PluginError(NncertError):
    """A plugin registered something invalid (duplicate name, wrong type)."""
