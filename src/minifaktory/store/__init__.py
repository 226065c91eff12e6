"""Storage: the only package that imports apsw or contains SQL."""

from minifaktory.store.store import BatchRow, SetName, Store, StoredJob, WorkingRow

__all__ = ["BatchRow", "SetName", "Store", "StoredJob", "WorkingRow"]
