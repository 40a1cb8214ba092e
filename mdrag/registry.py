"""A named registry: entries keyed by their `name`, an unknown name a clear error that lists the known ones."""

from __future__ import annotations

from typing import Generic, TypeVar

from mdrag.errors import UnknownNameError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, entry: T) -> T:
        self[entry.name] = entry
        return entry

    def find(self, name: str) -> T:
        if name not in self:
            raise UnknownNameError(f"Unknown {self.kind} '{name}'. Known: {', '.join(self)}")
        return self[name]
