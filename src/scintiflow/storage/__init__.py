"""Object storage behind one protocol (`ObjectStore`): a local folder or an S3 bucket."""

from scintiflow.storage.stores import (
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    LocalStore,
    NotARegularFileError,
    ObjectInfo,
    ObjectStore,
    S3Store,
    StoreError,
    open_store,
    validate_key,
)

__all__ = [
    "InvalidKeyError",
    "KeyExistsError",
    "KeyNotFoundError",
    "LocalStore",
    "NotARegularFileError",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "StoreError",
    "open_store",
    "validate_key",
]
