"""Registries of named objects (the penalties, the parameterisations): one dict each, with checked additions.

A :class:`Registry` is a ``dict`` from name to object, so configurations list its names and read its ``keys()``
view as their choices; :meth:`Registry.register` adds an object of the registry's type under a new name (and sets
the object's ``name``), :meth:`Registry.unregister` removes one that was not built in, and :meth:`Registry.lookup`
raises a ``ValueError`` listing the valid names.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

Item = TypeVar("Item")


class Registry(dict[str, Item], Generic[Item]):
    """Named objects of type ``kind``, e.g. ``Registry("penalty", Penalty)``."""

    def __init__(self, what: str, kind: type[Item]) -> None:
        super().__init__()
        self.what, self.kind = what, kind
        self.built_in: tuple[str, ...] = ()

    def register(self, name: str, item: Item) -> Item:
        """Add ``item`` under ``name`` (which must be new) and return it, its ``name`` set."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if name in self:
            raise ValueError(f"{self.what} {name!r} is already registered")
        if not isinstance(item, self.kind):
            raise TypeError(f"expected a {self.kind.__name__}, got {type(item).__name__}")
        item.name = name  # type: ignore[attr-defined]
        self[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name``; the built-in entries (:meth:`seal`) stay."""
        if name in self.built_in:
            raise ValueError(f"the built-in {self.what} {name!r} cannot be removed")
        self.lookup(name)
        del self[name]

    def lookup(self, name: str) -> Item:
        """The entry ``name``; a ``ValueError`` lists the valid names otherwise."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.what} {name!r}; valid: {', '.join(self)}") from None

    def seal(self) -> None:
        """Mark the entries registered so far as built in (they cannot be unregistered)."""
        self.built_in = tuple(self)
