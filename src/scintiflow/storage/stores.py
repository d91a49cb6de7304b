"""Object storage behind one small protocol: a local folder or an S3-compatible bucket.

Every step reads and writes through `ObjectStore`, so the same code runs on a laptop (a folder)
and in production (S3, MinIO, ...). Keys are relative, `/`-separated and never escape the
store's root. Keys must not carry patient identifiers (docs/storage.md, "Layout"): callers
derive them from content hashes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from scintiflow.settings import Settings

_TMP_MARKER = ".scintiflow-tmp-"
_COPY_CHUNK = 1 << 20  # put_file copies a local file in pieces of 1 MiB


class StoreError(Exception):
    """A storage operation failed; `reason` is a stable code for reports and quarantine."""

    reason = "store_error"
    # True when the failure is a property of the object itself (a key that cannot exist, a
    # symlink, a device file): the input is quarantined. False (the default): storage is at
    # fault (missing, S3 errors, I/O errors), the input is retried and never quarantined.
    input_fault = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def permanent(self) -> bool:
        """Whether retrying cannot help (a missing folder or bucket, access denied)."""
        return self.reason in PERMANENT_REASONS


# Storage errors no retry can cure: the run ends with a clear error, publishing nothing.
PERMANENT_REASONS = frozenset({"missing_source", "missing_bucket", "access_denied"})


class InvalidKeyError(StoreError, ValueError):
    """The key is empty, absolute, contains `..`/NUL, or would otherwise escape the root."""

    reason = "invalid_key"
    input_fault = True


class NotARegularFileError(StoreError):
    """A listed name in a folder store is a symlink (never followed) or a special file."""

    reason = "not_a_regular_file"
    input_fault = True


class KeyNotFoundError(StoreError, KeyError):
    """The object does not exist."""

    reason = "missing_object"

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else self.reason


class ChangedSinceListingError(StoreError):
    """`get(..., if_match=fingerprint)`: the object is no longer the one that was listed
    (replaced or rewritten in between). Storage, not the scan: the input is read again by
    the next run, which lists it afresh."""

    reason = "changed_since_listing"


class KeyExistsError(StoreError):
    """`put(..., if_absent=True)` found the key already present; nothing was written."""

    reason = "key_exists"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key (relative to the store root), size in bytes, fingerprint.

    `fingerprint` says "the same bytes as when listed before" without reading them: S3's
    ETag with the size, a folder's mtime (ns) with the size. Empty when the store has none.
    """

    key: str
    size: int
    fingerprint: str = ""


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise `InvalidKeyError`."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("object key must be a non-empty string")
    if "\x00" in key:
        raise InvalidKeyError("object key must not contain NUL")
    if "\\" in key:
        raise InvalidKeyError("object key must use '/' separators, not '\\'")
    if key.startswith("/"):
        raise InvalidKeyError("object key must be relative, not absolute")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKeyError("object key must not contain empty, '.' or '..' segments")
    if any(p.startswith(_TMP_MARKER) for p in parts):
        raise InvalidKeyError("object key uses a reserved temporary-file name")
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix may be empty or end in '/'; otherwise it follows the key rules."""
    if prefix == "":
        return prefix
    validate_key(prefix.rstrip("/") or "x")
    if prefix.startswith("/"):
        raise InvalidKeyError("prefix must be relative, not absolute")
    return prefix


@runtime_checkable
class ObjectStore(Protocol):
    """What every step may do with storage. Implementations: `LocalStore`, `S3Store`."""

    url: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in lexicographic key order, lazily."""
        ...

    def get(self, key: str, *, if_match: str = "") -> bytes:
        """The object's bytes; `KeyNotFoundError` when absent. `if_match`: the fingerprint
        the listing gave (`ObjectInfo.fingerprint`); `ChangedSinceListingError` when the
        object is no longer that one."""
        ...

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        """Up to `length` bytes from offset `start` (fewer at the end of the object);
        `if_match` as for `get`."""
        ...

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write atomically; with `if_absent`, raise `KeyExistsError` instead of overwriting."""
        ...

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Write a local file's bytes atomically, streamed: an object of any size (the
        report of a large night) is written without being held in memory."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        ...

    def copy(self, src: str, dst: str, *, if_absent: bool = False) -> None:
        """Copy one object to another key within the store."""
        ...

    def url_for(self, key: str) -> str:
        """A URL a person or tool can open (`file://...` or `s3://...`)."""
        ...

    def check_root(self) -> None:
        """Raise `StoreError` (`missing_source` / `missing_bucket`) when the folder or bucket
        itself does not exist: an error before anything is written, not an empty night."""
        ...


class LocalStore:
    """A folder used as a bucket. Writes go to a temp file in the same folder, then rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = validate_key(key).split("/")
        path = self.root.joinpath(*parts)
        # Belt and braces against symlinks inside the root pointing outside it. The root is
        # resolved and a valid key has no '.' or '..', so only a key that passes through a
        # symlink can leave the root: one lstat per part finds out (10 us a key, where
        # resolving every key took 32 us), and only then is the path resolved.
        if self._through_symlink(parts) and not path.resolve().is_relative_to(self.root):
            raise InvalidKeyError("object key resolves outside the store root")
        return path

    def _through_symlink(self, parts: list[str]) -> bool:
        """Whether an existing component of the key's path below the root is a symlink."""
        current = str(self.root)
        for part in parts:
            current = f"{current}/{part}"
            try:
                mode = os.lstat(current).st_mode
            except OSError:  # missing, or not a folder: nothing below it exists to follow
                return False
            if stat.S_ISLNK(mode):
                return True
        return False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = _validate_prefix(prefix)
        base_parts = prefix.split("/")[:-1]  # the folder the prefix lives in
        base = self.root.joinpath(*base_parts)
        if not base.is_dir():
            return
        yield from self._walk(base, "/".join(base_parts), prefix)

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        # Sorting a folder's children by name, with folders compared as "name/", yields keys in
        # the same byte order S3 uses, so both stores list identically.
        entries: list[tuple[str, os.DirEntry[str]]] = []
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith(_TMP_MARKER):
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                entries.append((entry.name + "/" if is_dir else entry.name, entry))
        for sort_name, entry in sorted(entries, key=lambda e: e[0].encode()):
            key = f"{rel}/{entry.name}" if rel else entry.name
            if sort_name.endswith("/"):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix):
                # Symlinks and special files are listed (every name is accounted for) but
                # never read: `get` refuses them with a reason code of their own.
                st = entry.stat(follow_symlinks=False)
                kind = "mtime" if entry.is_file(follow_symlinks=False) else "special"
                yield ObjectInfo(key, st.st_size, _local_fingerprint(kind, st))

    def _regular(self, key: str) -> Path:
        """The path of a regular file under the root (symlinks refused, never followed)."""
        raw = self.root.joinpath(*validate_key(key).split("/"))
        try:
            st = raw.lstat()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFoundError(f"no object at {key!r} in {self.url}") from None
        except OSError as exc:
            raise StoreError(f"cannot stat {key!r}: {exc.strerror}", reason="read_error") from None
        if stat.S_ISLNK(st.st_mode):
            raise NotARegularFileError(
                f"{key!r} is a symbolic link (not followed)", reason="symlink_not_followed"
            )
        if stat.S_ISDIR(st.st_mode):
            raise KeyNotFoundError(f"no object at {key!r} in {self.url} (a folder)")
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(f"{key!r} is not a regular file")
        return self._path(key)

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"the folder {self.url} does not exist", reason="missing_source")

    def get(self, key: str, *, if_match: str = "") -> bytes:
        path = self._regular(key)
        try:
            with path.open("rb") as fh:
                self._pinned(fh, key, if_match)
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFoundError(f"no object at {key!r} in {self.url}") from None
        except OSError as exc:  # permissions, I/O errors: storage, not the scan
            raise StoreError(f"cannot read {key!r}: {exc.strerror}", reason="read_error") from None

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        path = self._regular(key)
        try:
            with path.open("rb") as fh:
                self._pinned(fh, key, if_match)
                fh.seek(max(0, start))
                return fh.read(max(0, length))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFoundError(f"no object at {key!r} in {self.url}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {key!r}: {exc.strerror}", reason="read_error") from None

    def _pinned(self, fh: BinaryIO, key: str, if_match: str) -> None:
        """The open file is the one listed: puts replace files whole (rename), so the
        descriptor's own mtime and size say which version it reads."""
        if if_match and _local_fingerprint("mtime", os.fstat(fh.fileno())) != if_match:
            raise ChangedSinceListingError(f"{key!r} changed since it was listed in {self.url}")

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._write(key, lambda fh: fh.write(data), if_absent=if_absent)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda fh: shutil.copyfileobj(src, fh, _COPY_CHUNK))

    def _write(
        self, key: str, fill: Callable[[BinaryIO], object], *, if_absent: bool = False
    ) -> None:
        """`fill` a temp file beside the target, fsync it, then rename (or link) it in."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(
                f"cannot write {key!r}: a parent of it is an object", reason="key_conflict"
            ) from None
        tmp = path.parent / f"{_TMP_MARKER}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            if if_absent:
                # link() fails atomically when the target exists: no check-then-write race.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise KeyExistsError(f"object {key!r} already exists in {self.url}") from None
            else:
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def copy(self, src: str, dst: str, *, if_absent: bool = False) -> None:
        self.put(dst, self.get(src), if_absent=if_absent)

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()


class S3Store:
    """An S3-compatible bucket (AWS, MinIO, moto) under an optional key prefix, via boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 5,
        read_timeout_s: float = 60.0,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise StoreError("s3 URL needs a bucket: s3://bucket[/prefix]", reason="bad_store_url")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client or _make_s3_client(endpoint_url, region, max_attempts, read_timeout_s)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, action: str, key: str) -> StoreError:
        code = _error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            return KeyNotFoundError(f"no object at {key!r} in {self.url}")
        if code in ("PreconditionFailed", "412") and action == "get":
            return ChangedSinceListingError(f"{key!r} changed since it was listed in {self.url}")
        if code in ("PreconditionFailed", "412"):
            return KeyExistsError(f"object {key!r} already exists in {self.url}")
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket!r} does not exist", reason="missing_bucket")
        if code in ("AccessDenied", "403", "Forbidden"):
            return StoreError(
                f"S3 {action} of {key!r} denied in {self.url}", reason="access_denied"
            )
        return StoreError(
            f"S3 {action} of {key!r} failed ({code or type(exc).__name__})", reason="s3_error"
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = _validate_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    size = int(obj["Size"])
                    etag = str(obj.get("ETag", "")).strip('"')
                    yield ObjectInfo(obj["Key"][cut:], size, f"etag:{etag}:{size}" if etag else "")
        except Exception as exc:  # botocore raises several unrelated types
            if isinstance(exc, StoreError) or not _is_boto_error(exc):
                raise
            raise self._error(exc, "list", prefix) from exc

    def get(self, key: str, *, if_match: str = "") -> bytes:
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self._full(key), **_if_match(if_match)
            )
            return bytes(response["Body"].read())
        except Exception as exc:
            if not _is_boto_error(exc):
                raise
            raise self._error(exc, "get", key) from exc

    def get_range(self, key: str, start: int, length: int, *, if_match: str = "") -> bytes:
        if length <= 0:
            return b""
        first = max(0, start)
        try:
            response = self._client.get_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Range=f"bytes={first}-{first + length - 1}",
                **_if_match(if_match),
            )
            return bytes(response["Body"].read())
        except Exception as exc:
            if not _is_boto_error(exc):
                raise
            if _error_code(exc) == "InvalidRange":  # start at or past the end of the object
                return b""
            raise self._error(exc, "get", key) from exc

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._put(key, data, hashlib.sha256(data).digest(), if_absent=if_absent)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        # One PUT streamed from the file (S3 takes up to 5 GB in one), its SHA-256 computed
        # first so S3 verifies what arrives; the report is the largest object, ~11 KB a study.
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").digest()
            fh.seek(0)
            self._put(key, fh, digest)

    def _put(
        self, key: str, body: bytes | BinaryIO, sha256: bytes, *, if_absent: bool = False
    ) -> None:
        digest = base64.b64encode(sha256).decode()
        extra: dict[str, str] = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            response = self._client.put_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=digest,
                **extra,
            )
        except Exception as exc:
            if not _is_boto_error(exc):
                raise
            raise self._error(exc, "put", key) from exc
        echoed = response.get("ChecksumSHA256")
        if echoed is not None and echoed != digest:
            raise StoreError(
                f"S3 stored {key!r} with a different SHA-256 than sent", reason="checksum_mismatch"
            )

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if not _is_boto_error(exc):
                raise
            err = self._error(exc, "head", key)
            if isinstance(err, KeyNotFoundError):
                return False
            raise err from exc
        return True

    def copy(self, src: str, dst: str, *, if_absent: bool = False) -> None:
        if if_absent:
            # copy_object's IfNoneMatch is not honoured by every S3 implementation (moto
            # overwrites), so the conditional path goes through a conditional put.
            self.put(dst, self.get(src), if_absent=True)
            return
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=self._full(dst),
                CopySource={"Bucket": self.bucket, "Key": self._full(src)},
                ChecksumAlgorithm="SHA256",
            )
        except Exception as exc:
            if not _is_boto_error(exc):
                raise
            raise self._error(exc, "copy", src) from exc

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def check_root(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if not _is_boto_error(exc):
                raise
            if _error_code(exc) in ("NoSuchBucket", "404", "NotFound"):
                raise StoreError(
                    f"bucket {self.bucket!r} does not exist", reason="missing_bucket"
                ) from exc
            raise self._error(exc, "head-bucket", self.prefix or "-") from exc


def _make_s3_client(
    endpoint_url: str | None, region: str, max_attempts: int, read_timeout_s: float = 60.0
) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        read_timeout=read_timeout_s,
        connect_timeout=min(10.0, read_timeout_s),
        retries={"mode": "standard", "max_attempts": max_attempts},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _local_fingerprint(kind: str, st: os.stat_result) -> str:
    return f"{kind}:{st.st_mtime_ns}:{st.st_size}"


def _if_match(fingerprint: str) -> dict[str, str]:
    """GetObject's `IfMatch` for a listing fingerprint (`etag:<etag>:<size>`); none without
    one. S3 answers 412 PreconditionFailed when the object's ETag is no longer that one."""
    if not fingerprint:
        return {}
    kind, _, rest = fingerprint.partition(":")
    etag = rest.rpartition(":")[0]
    if kind != "etag" or not etag:
        raise ValueError(f"not an S3 listing fingerprint: {fingerprint!r}")
    return {"IfMatch": f'"{etag}"'}


def _is_boto_error(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def open_store(
    url: str | os.PathLike[str] | None = None, *, settings: Settings | None = None
) -> ObjectStore:
    """Open the store a URL names: a folder or `file://...` -> LocalStore, `s3://b/p` -> S3Store.

    Defaults (URL, endpoint, region) come from `Settings`.
    """
    if settings is None:
        from scintiflow.settings import get_settings

        settings = get_settings()
    raw = os.fspath(url) if url is not None else settings.store_url
    parsed = urlparse(raw)
    if parsed.scheme == "s3":
        return S3Store(
            parsed.netloc,
            unquote(parsed.path),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            max_attempts=settings.s3_max_attempts,
            read_timeout_s=settings.s3_read_timeout_s,
        )
    if parsed.scheme == "file":
        return LocalStore(unquote(parsed.path))
    if parsed.scheme == "":
        return LocalStore(raw)
    raise StoreError(
        f"unsupported store URL scheme {parsed.scheme!r} (use a path, file:// or s3://)",
        reason="bad_store_url",
    )
