"""Object storage behind one protocol (`ObjectStore`): a local folder or an S3 bucket."""

from scintiflow.storage.stores import (
    ChangedSinceListingError,
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
    "ChangedSinceListingError",
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
