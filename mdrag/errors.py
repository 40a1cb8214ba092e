"""Errors a user can act on. Each message says what went wrong and what fixes it."""


class MdragError(Exception):
    """Base class: the CLI and the app show these messages as they are (no stack trace)."""


class InvalidQueryError(MdragError, ValueError):
    pass


class UnknownNameError(MdragError, KeyError):
    """An unknown registry name (domain, variant, retriever, ...); the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class MissingModelError(MdragError, FileNotFoundError):
    pass


class EmptyCorpusError(MdragError):
    pass


class BenchmarkError(MdragError):
    pass
