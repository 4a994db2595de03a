"""A tensor-blob plugin in Python, built with componentize-py.

    componentize-py -d ../../wit -w plugin-command componentize app -o app.wasm
    tblob run app.wasm --dir DATA::/data -- /data/FILE

Stores a few small artifacts with metadata and checks what the store says
about them, then streams FILE in through a `writer`, reads it back through a
`reader` (and one range of it after a `seek`) and compares every byte with
the file. Prints one line per step; exits 1 on the first mismatch, with the
store's typed error when there is one.

componentize-py bundles only the modules imported here at build time, so
every import is at the top level.
"""

import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import blobs
from wit_world.imports.tensor_blob_types import (
    Error_InvalidArgument,
    Error_NotFound,
    Condition_LinkedFrom,
    Condition_LinksToExternal,
    Condition_Tag,
    KeyValue,
    MetadataUpdate,
    PutOptions,
    Query,
)

# Writes and reads go in pieces of this size. componentize-py keeps every
# `bytes` passed to an import alive until the plugin exits, so a Python
# plugin's memory grows by the bytes it uploads (see examples/python/README.md).
PIECE = 1 << 20


def options(**fields) -> PutOptions:
    base = dict(
        filename=None,
        content_type=None,
        creator=None,
        tags=[],
        links=[],
        external_links=[],
        custom=[],
        chunking=None,
        compress=None,
    )
    base.update(fields)
    return PutOptions(**base)


def fail(message: str) -> None:
    print(f"FAIL {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def metadata_round_trip() -> None:
    data = b"hello from python\n" * 1000
    first = blobs.put(
        data,
        options(
            filename="hello.txt",
            content_type="text/plain",
            creator="python-example",
            tags=["example", "python"],
            custom=[KeyValue(key="lang", value="python")],
        ),
    )
    check(blobs.get(first) == data, "get returned other bytes")
    meta = blobs.stat(first)
    check(meta.size == len(data), f"size {meta.size}")
    check(meta.filename == "hello.txt", f"filename {meta.filename!r}")
    check(meta.creator == "python-example", f"creator {meta.creator!r}")
    check(sorted(meta.tags) == ["example", "python"], f"tags {meta.tags}")
    check(len(meta.digest) == 32, "digest length")
    print(f"put {first} {meta.size} bytes, tags {','.join(sorted(meta.tags))}")

    # A second artifact linked to the first; identical bytes share chunks.
    # Tags and links are sets: the second "python" and link are dropped.
    second = blobs.put(
        data,
        options(links=[first, first], tags=["python", "python"], external_links=["run:42"]),
    )
    check(blobs.stat(second).tags == ["python"], f"tags {blobs.stat(second).tags}")
    stats = blobs.stats()
    check(stats.logical_bytes >= 2 * len(data), "logical bytes")
    check(blobs.stat(second).links == [first], "links")
    tagged = blobs.find_by_tag("python")
    check(first in tagged and second in tagged, f"find-by-tag {tagged}")
    updated = blobs.update(
        second,
        MetadataUpdate(
            filename=None,
            content_type=None,
            tags=["renamed"],
            links=None,
            external_links=None,
            custom=None,
            remove_tags=[],
            add_tags=["checked"],
            remove_links=[],
            add_links=[],
            remove_external_links=[],
            add_external_links=[],
            unset_custom=[],
            set_custom=[],
        ),
    )
    check(sorted(updated.tags) == ["checked", "renamed"], f"updated tags {updated.tags}")
    # A query: newest first, one page, answered by the host.
    page = blobs.query(Query([Condition_Tag("checked")], True, None, 10))
    check(page.ids == [second] and page.next is None, f"query {page.ids} {page.next}")
    # Links both ways, and to an entity that is not an artifact.
    page = blobs.query(Query([Condition_LinkedFrom(second)], False, None, 10))
    check(page.ids == [first], f"linked-from {page.ids}")
    page = blobs.query(Query([Condition_LinksToExternal("run:42")], False, None, 10))
    check(page.ids == [second], f"links-to-external {page.ids}")
    print(f"linked {second} -> {first}; chunks {stats.chunks}, artifacts {stats.artifacts}")

    # Deleting a linked artifact drops the links to it, nothing dangles.
    blobs.delete(first)
    check(blobs.stat(second).links == [], f"links after delete {blobs.stat(second).links}")
    print("deleted the link target: the link went with it")

    # Errors come back typed.
    blobs.delete(second)
    try:
        blobs.stat(second)
        fail("stat of a deleted artifact succeeded")
    except Err as error:
        check(isinstance(error.value, Error_NotFound), f"error {error.value!r}")
    try:
        blobs.exists("not-an-id")
        fail("a malformed id was accepted")
    except Err as error:
        check(isinstance(error.value, Error_InvalidArgument), f"error {error.value!r}")
    print("errors typed: not-found, invalid-argument")


def stream_file(path: str) -> None:
    writer = blobs.create_writer(options(filename=path, tags=["large"]))
    size = 0
    with open(path, "rb") as file:
        while piece := file.read(PIECE):
            writer.write(piece)
            size += len(piece)
    artifact = writer.finish()
    print(f"streamed {artifact} {size} bytes")

    reader = blobs.open_reader(artifact, 0)
    check(reader.size() == size, "reader size")
    with open(path, "rb") as file:
        offset = 0
        while piece := reader.read(PIECE):
            check(piece == file.read(len(piece)), f"bytes differ at {offset}")
            offset += len(piece)
        check(offset == size and not file.read(1), f"read {offset} of {size} bytes")

        # A range: a third of the way in, across chunk boundaries.
        start = size // 3
        length = min(3 * PIECE + 12345, size - start)
        reader.seek(start)
        file.seek(start)
        got = 0
        while got < length:
            piece = reader.read(min(PIECE, length - got))
            check(bool(piece), "range read ended early")
            check(piece == file.read(len(piece)), f"range bytes differ at {start + got}")
            got += len(piece)
    print(f"read back {offset} bytes and range {start}+{length}: equal")
    print(f"id {artifact}")


class Run(exports.Run):
    def run(self) -> None:
        try:
            metadata_round_trip()
            for path in sys.argv[1:]:
                stream_file(path)
        except Err as error:
            fail(f"store error {error.value!r}")
