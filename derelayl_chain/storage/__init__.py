"""Storage: a key-value protocol, the in-memory and LevelDB stores, and the key schema."""

from derelayl_chain.storage.kv import KeyValueStore, WriteBatch
from derelayl_chain.storage.leveldb import LevelDBStore
from derelayl_chain.storage.memory import MemoryStore
from derelayl_chain.storage.schema import SCHEMA_VERSION, open_store

__all__ = [
    "SCHEMA_VERSION",
    "KeyValueStore",
    "LevelDBStore",
    "MemoryStore",
    "WriteBatch",
    "open_store",
]
