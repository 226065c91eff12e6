"""Storage: the only package that imports apsw or contains SQL."""

from minifaktory.store.store import SetName, Store, StoredJob, WorkingRow

__all__ = ["SetName", "Store", "StoredJob", "WorkingRow"]
