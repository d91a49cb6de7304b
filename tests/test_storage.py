"""One contract suite, run unchanged against LocalStore and S3Store (moto's real HTTP server)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from scintiflow.settings import Settings
from scintiflow.storage import (
    ChangedSinceListingError,
    InvalidKeyError,
    KeyExistsError,
    KeyNotFoundError,
    LocalStore,
    ObjectStore,
    S3Store,
    StoreError,
    open_store,
    validate_key,
)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(tmp_path / "bucket", settings=Settings())
    bucket = request.getfixturevalue("s3_bucket")
    settings = request.getfixturevalue("s3_settings")
    return open_store(f"s3://{bucket}/some/prefix", settings=settings)


def test_store_satisfies_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_get_roundtrip_bytes_exactly(store: ObjectStore) -> None:
    data = bytes(range(256)) * 1000 + b"\x00\xff"
    store.put("exports/2026-11-27/a.dcm", data)
    assert store.get("exports/2026-11-27/a.dcm") == data
    assert store.exists("exports/2026-11-27/a.dcm")
    assert not store.exists("exports/2026-11-27/b.dcm")


def test_put_empty_object(store: ObjectStore) -> None:
    store.put("empty.bin", b"")
    assert store.get("empty.bin") == b""
    assert [(o.key, o.size) for o in store.list("")] == [("empty.bin", 0)]


def test_put_overwrites_by_default(store: ObjectStore) -> None:
    store.put("k", b"one")
    store.put("k", b"two")
    assert store.get("k") == b"two"


def test_put_if_absent_refuses_existing_and_keeps_original(store: ObjectStore) -> None:
    store.put("results/manifest.json", b"first", if_absent=True)
    with pytest.raises(KeyExistsError) as err:
        store.put("results/manifest.json", b"second", if_absent=True)
    assert err.value.reason == "key_exists"
    assert store.get("results/manifest.json") == b"first"


def test_put_file_streams_a_local_file_and_says_what_it_wrote(
    store: ObjectStore, tmp_path: Path
) -> None:
    from scintiflow.storage.jsonio import put_from_file

    page = tmp_path / "page.html"
    data = os.urandom(3 << 20) + b"tail"  # several copy pieces, not a multiple of one
    page.write_bytes(data)
    written = put_from_file(store, "results/run/report.html", page)
    assert store.get("results/run/report.html") == data
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.size == len(data)
    page.write_bytes(b"shorter")  # replaces an existing object whole
    store.put_file("results/run/report.html", page)
    assert store.get("results/run/report.html") == b"shorter"


def test_put_file_of_a_missing_file_writes_nothing(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file("results/run/report.html", tmp_path / "absent.html")
    assert not store.exists("results/run/report.html")
    assert list(store.list("")) == []


def test_get_missing_raises_typed_error(store: ObjectStore) -> None:
    with pytest.raises(KeyNotFoundError) as err:
        store.get("nope/missing.dcm")
    assert err.value.reason == "missing_object"
    assert "nope/missing.dcm" in str(err.value)


def test_list_is_prefix_filtered_sorted_and_relative(store: ObjectStore) -> None:
    keys = ["a/b/c.txt", "a/b.txt", "a/b/d.txt", "a.b", "a/ba/x", "b/z", "a/c"]
    for i, k in enumerate(keys):
        store.put(k, b"x" * i)
    listed = [o.key for o in store.list("")]
    assert listed == sorted(keys, key=str.encode)
    assert [o.key for o in store.list("a/b")] == ["a/b.txt", "a/b/c.txt", "a/b/d.txt", "a/ba/x"]
    assert [o.key for o in store.list("a/b/")] == ["a/b/c.txt", "a/b/d.txt"]
    assert [o.key for o in store.list("zzz/")] == []
    sizes = {o.key: o.size for o in store.list("")}
    assert sizes == {k: i for i, k in enumerate(keys)}


def test_list_streams_past_one_page(store: ObjectStore) -> None:
    # S3 pages hold 1000 keys; 1,050 forces a second page.
    n = 1050
    for i in range(n):
        store.put(f"many/{i:05d}", b"")
    it = store.list("many/")
    first = next(it)  # a generator: usable before the listing is complete
    assert first.key == "many/00000"
    assert sum(1 for _ in it) == n - 1


def test_get_range_reads_a_slice_and_stops_at_the_end(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    store.put("r/obj.bin", data)
    assert store.get_range("r/obj.bin", 0, 16) == data[:16]
    assert store.get_range("r/obj.bin", 1000, 100) == data[1000:]
    assert store.get_range("r/obj.bin", 5000, 10) == b""
    with pytest.raises(KeyNotFoundError):
        store.get_range("r/missing.bin", 0, 10)


def test_listing_fingerprint_changes_with_the_bytes(store: ObjectStore) -> None:
    store.put("f/a.bin", b"one")
    first = next(iter(store.list("f/"))).fingerprint
    assert first
    assert first == next(iter(store.list("f/"))).fingerprint
    time.sleep(0.01)  # a folder's fingerprint holds the mtime in ns
    store.put("f/a.bin", b"two")
    assert next(iter(store.list("f/"))).fingerprint != first


def test_a_read_pinned_to_the_listing_refuses_a_replaced_object(store: ObjectStore) -> None:
    """`if_match` = the listing's fingerprint: the listed version reads, a replaced one does
    not (a storage error, not an input fault: the next run lists the new version)."""
    store.put("p/a.dcm", b"listed version")
    pin = next(iter(store.list("p/"))).fingerprint
    assert store.get("p/a.dcm", if_match=pin) == b"listed version"
    assert store.get_range("p/a.dcm", 0, 6, if_match=pin) == b"listed"
    time.sleep(0.01)  # a folder's fingerprint holds the mtime in ns
    store.put("p/a.dcm", b"replaced after the listing")
    for read in (
        lambda: store.get("p/a.dcm", if_match=pin),
        lambda: store.get_range("p/a.dcm", 0, 6, if_match=pin),
    ):
        with pytest.raises(ChangedSinceListingError) as caught:
            read()
        assert caught.value.reason == "changed_since_listing"
        assert not caught.value.input_fault
        assert not caught.value.permanent
    assert store.get("p/a.dcm") == b"replaced after the listing"  # unpinned: what is there
    fresh = next(iter(store.list("p/"))).fingerprint
    assert store.get("p/a.dcm", if_match=fresh) == b"replaced after the listing"


def test_copy(store: ObjectStore) -> None:
    store.put("src/one", b"payload")
    store.copy("src/one", "dst/one")
    assert store.get("dst/one") == b"payload"
    assert store.get("src/one") == b"payload"
    store.put("dst/two", b"keep")
    with pytest.raises(KeyExistsError):
        store.copy("src/one", "dst/two", if_absent=True)
    assert store.get("dst/two") == b"keep"
    with pytest.raises(KeyNotFoundError):
        store.copy("src/missing", "dst/three")


@pytest.mark.parametrize(
    "bad",
    ["", "/etc/passwd", "../escape", "a/../../b", "a//b", "a/./b", "nul\x00byte", "a\\b", "a/"],
)
def test_keys_escaping_the_root_are_rejected(store: ObjectStore, bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put(bad, b"x")
    with pytest.raises(InvalidKeyError):
        store.get(bad)
    with pytest.raises(InvalidKeyError):
        store.exists(bad)


def test_url_for_names_the_object(store: ObjectStore) -> None:
    url = store.url_for("results/2026-11-27/r1/report.html")
    assert url.endswith("/results/2026-11-27/r1/report.html")
    assert url.split(":", 1)[0] in ("file", "s3")


def test_concurrent_if_absent_puts_have_one_winner(store: ObjectStore) -> None:
    winners: list[int] = []
    errors: list[Exception] = []

    def attempt(i: int) -> None:
        try:
            store.put("race/manifest.json", str(i).encode(), if_absent=True)
            winners.append(i)
        except KeyExistsError:
            pass
        except StoreError as exc:  # e.g. S3 409 ConditionalRequestConflict
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1, (winners, errors)
    assert store.get("race/manifest.json") == str(winners[0]).encode()


# --- implementation-specific properties -------------------------------------------------------


def test_local_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("x/y.bin", b"1" * 10_000)
    store.put("x/y.bin", b"2" * 10)
    (tmp_path / "src.bin").write_bytes(b"3" * 5)
    store.put_file("x/y.bin", tmp_path / "src.bin")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.bin"]
    assert store.get("x/y.bin") == b"3" * 5


def test_local_list_ignores_inflight_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".scintiflow-tmp-abc").write_bytes(b"partial")
    store.put("d/done", b"ok")
    assert [o.key for o in store.list("")] == ["d/done"]


def test_local_symlink_out_of_root_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidKeyError):
        LocalStore(root).get("link/secret")


def test_local_keys_through_symlinks_resolve_and_stay_inside_the_root(tmp_path: Path) -> None:
    """Only keys that pass through a symlink are resolved: one to a folder inside the root
    works (read and write), one whose parent links out is refused for put and get alike,
    and a key below a missing folder is an ordinary new object."""
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.bin").write_bytes(b"a")
    os.symlink(root / "real", root / "inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "out")
    store = LocalStore(root)
    assert store.get("real/a.bin") == b"a"
    store.put("inside/b.bin", b"b")  # through a link that stays in the root
    assert (root / "real" / "b.bin").read_bytes() == b"b"
    with pytest.raises(InvalidKeyError):
        store.put("out/c.bin", b"c")
    (outside / "secret").write_bytes(b"s")
    with pytest.raises(InvalidKeyError):
        store.get("out/secret")
    assert [p.name for p in outside.iterdir()] == ["secret"]
    store.put("new/folder/d.bin", b"d")
    assert store.get("new/folder/d.bin") == b"d"


def test_open_store_picks_implementation_from_url(tmp_path: Path) -> None:
    settings = Settings()
    assert isinstance(open_store(str(tmp_path), settings=settings), LocalStore)
    local = open_store(tmp_path.as_uri(), settings=settings)
    assert isinstance(local, LocalStore)
    assert local.url == tmp_path.resolve().as_uri()
    s3 = open_store("s3://bucket/deep/prefix/", settings=settings)
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket", "deep/prefix")
    with pytest.raises(StoreError) as err:
        open_store("ftp://host/x", settings=settings)
    assert err.value.reason == "bad_store_url"


def test_store_url_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCINTIFLOW_STORE_URL", str(tmp_path / "from-env"))
    store = open_store(settings=Settings())
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "from-env").resolve()


@pytest.mark.s3
def test_s3_put_sends_sha256_checksum(s3_bucket: str, s3_settings: Settings) -> None:
    import base64

    import boto3

    store = open_store(f"s3://{s3_bucket}", settings=s3_settings)
    data = b"checksummed payload"
    store.put("c/obj", data)
    client = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url)
    head = client.head_object(Bucket=s3_bucket, Key="c/obj", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.s3
def test_s3_prefix_isolates_stores(s3_bucket: str, s3_settings: Settings) -> None:
    one = open_store(f"s3://{s3_bucket}/one", settings=s3_settings)
    two = open_store(f"s3://{s3_bucket}/two", settings=s3_settings)
    one.put("k", b"1")
    assert not two.exists("k")
    assert [o.key for o in one.list()] == ["k"]
    assert one.url_for("k") == f"s3://{s3_bucket}/one/k"


@pytest.mark.s3
def test_s3_missing_bucket_is_a_clear_error(s3_settings: Settings) -> None:
    store = open_store("s3://no-such-bucket-here", settings=s3_settings)
    with pytest.raises(StoreError) as err:
        store.put("k", b"x")
    assert err.value.reason == "missing_bucket"
    with pytest.raises(StoreError) as err2:
        list(store.list(""))
    assert err2.value.reason == "missing_bucket"


@pytest.mark.s3
def test_s3_unreachable_endpoint_is_a_store_error() -> None:
    # Port 9 on loopback: nothing listens; the client must fail as a StoreError, not hang/crash.
    settings = Settings(s3_endpoint_url="http://127.0.0.1:9", s3_max_attempts=1)
    store = open_store("s3://bucket", settings=settings)
    with pytest.raises(StoreError) as err:
        store.get("k")
    assert err.value.reason == "s3_error"


def test_validate_key_accepts_ordinary_keys() -> None:
    for key in ["a", "exports/2026-11-27/site-A/0123abcd.dcm", "a.b/c-d_e"]:
        assert validate_key(key) == key
