//! A `wasi:blobstore@0.2.0-draft` client for host tests, written from the
//! upstream WIT alone (`wit/` here is the pristine v0.2.0-draft tree, with
//! wasi:io@0.2.1), not from tensor-blob's bindings. A WASI command (Rust
//! std's `fn main`); exits 1 on the first result that is not what the
//! upstream docs (and tensor-blob's documented decisions) promise.
//!
//! Modes (`blobstore-client MODE ARGS...`):
//! - `all`: every function of the interface, each result checked;
//! - `hostile`: huge names, huge lengths and bad ranges, each an error;
//! - `put C N LEN SEED`: stores LEN pseudo-random bytes (from SEED) as
//!   object N of container C (created if missing), through the stream;
//! - `check C N LEN SEED`: reads object N back and compares;
//! - `cat C N`: reads object N whole; prints `ok LEN` or `error: MSG` (and
//!   exits 3 on error);
//! - `copy C N C2 N2`: copies an object.

wit_bindgen::generate!({
    path: "wit",
    world: "wasi:blobstore/imports",
    generate_all,
});

use wasi::blobstore::blobstore;
use wasi::blobstore::container::Container;
use wasi::blobstore::types::{IncomingValue, ObjectId, OutgoingValue};
use wasi::io::streams::StreamError;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| fail("missing argument"))
    };
    match arg(1) {
        "all" => all(),
        "hostile" => hostile(),
        "put" => {
            let container = open_or_create(arg(2));
            let bytes = pattern(arg(4).parse().unwrap(), arg(5).parse().unwrap());
            write_object(&container, arg(3), &bytes).unwrap_or_else(|e| fail(&e));
            println!("ok {}", bytes.len());
        }
        "check" => {
            let container = blobstore::get_container(arg(2)).unwrap_or_else(|e| fail(&e));
            let want = pattern(arg(4).parse().unwrap(), arg(5).parse().unwrap());
            let got = read_async(&container, arg(3), 0, u64::MAX).unwrap_or_else(|e| fail(&e));
            expect(got == want, "bytes read back equal the bytes written");
            println!("ok {}", got.len());
        }
        "cat" => {
            let result = blobstore::get_container(arg(2))
                .and_then(|container| read_async(&container, arg(3), 0, u64::MAX));
            match result {
                Ok(bytes) => println!("ok {}", bytes.len()),
                Err(e) => {
                    println!("error: {e}");
                    std::process::exit(3);
                }
            }
        }
        "copy" => {
            blobstore::copy_object(&id(arg(2), arg(3)), &id(arg(4), arg(5)))
                .unwrap_or_else(|e| fail(&e));
            println!("ok");
        }
        other => fail(&format!("unknown mode {other}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("blobstore-client: FAILED: {message}");
    std::process::exit(1);
}

fn expect(condition: bool, what: &str) {
    if !condition {
        fail(what);
    }
}

fn expect_err<T>(result: Result<T, String>, what: &str) -> String {
    match result {
        Ok(_) => fail(&format!("{what}: succeeded, expected an error")),
        Err(e) => {
            expect(!e.is_empty(), "error strings are not empty");
            e
        }
    }
}

fn ok<T>(result: Result<T, String>, what: &str) -> T {
    result.unwrap_or_else(|e| fail(&format!("{what}: {e}")))
}

fn id(container: &str, object: &str) -> ObjectId {
    ObjectId {
        container: container.to_string(),
        object: object.to_string(),
    }
}

/// Deterministic pseudo-random bytes (xorshift).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn open_or_create(name: &str) -> Container {
    if ok(blobstore::container_exists(name), "container-exists") {
        ok(blobstore::get_container(name), "get-container")
    } else {
        ok(blobstore::create_container(name), "create-container")
    }
}

/// Writes `bytes` to `value`'s body stream, honouring `check-write`.
fn write_body(value: &OutgoingValue, bytes: &[u8]) -> Result<(), String> {
    let stream = value
        .outgoing_value_write_body()
        .map_err(|()| "outgoing-value-write-body refused".to_string())?;
    let mut rest = bytes;
    while !rest.is_empty() {
        let permit = stream.check_write().map_err(stream_error)? as usize;
        if permit == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = permit.min(rest.len());
        stream.write(&rest[..n]).map_err(stream_error)?;
        rest = &rest[n..];
    }
    stream.blocking_flush().map_err(stream_error)?;
    Ok(())
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

/// write-data first, then the body, then finish.
fn write_object(container: &Container, name: &str, bytes: &[u8]) -> Result<(), String> {
    let value = OutgoingValue::new_outgoing_value();
    container.write_data(name, &value)?;
    write_body(&value, bytes)?;
    OutgoingValue::finish(value)
}

fn read_async(container: &Container, name: &str, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let value = container.get_data(name, start, end)?;
    let size = value.size();
    let stream = IncomingValue::incoming_value_consume_async(value)?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(1 << 20) {
            Ok(piece) => bytes.extend_from_slice(&piece),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error(e)),
        }
    }
    if bytes.len() as u64 != size {
        return Err(format!(
            "size() said {size}, the stream gave {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn read_sync(container: &Container, name: &str, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let value = container.get_data(name, start, end)?;
    let size = value.size();
    let bytes = IncomingValue::incoming_value_consume_sync(value)?;
    if bytes.len() as u64 != size {
        return Err(format!(
            "size() said {size}, consume-sync gave {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn list_all(container: &Container, page: u64) -> Vec<String> {
    let stream = ok(container.list_objects(), "list-objects");
    let mut names = Vec::new();
    loop {
        let (batch, end) = ok(
            stream.read_stream_object_names(page),
            "read-stream-object-names",
        );
        expect(
            batch.len() as u64 <= page,
            "a read returns at most len names",
        );
        names.extend(batch);
        if end {
            return names;
        }
    }
}

fn all() {
    // Containers.
    expect(
        !ok(blobstore::container_exists("c1"), "container-exists"),
        "c1 absent at first",
    );
    expect_err(
        blobstore::get_container("c1"),
        "get-container of a missing container",
    );
    expect_err(
        blobstore::delete_container("c1"),
        "delete-container of a missing container",
    );
    let c1 = ok(blobstore::create_container("c1"), "create-container");
    expect_err(
        blobstore::create_container("c1"),
        "create-container of an existing name",
    );
    expect(
        ok(blobstore::container_exists("c1"), "container-exists"),
        "c1 exists",
    );
    expect(ok(c1.name(), "name") == "c1", "container name");
    let info = ok(c1.info(), "info");
    expect(info.name == "c1" && info.created_at > 0, "container info");
    let again = ok(blobstore::get_container("c1"), "get-container");
    expect(ok(again.name(), "name") == "c1", "get-container name");

    // write-data before the body.
    let big = pattern(3 << 20 | 12345, 7);
    ok(write_object(&c1, "a", &big), "write a");
    // The body before write-data.
    let value = OutgoingValue::new_outgoing_value();
    ok(write_body(&value, b"hello world"), "body of b");
    expect(
        value.outgoing_value_write_body().is_err(),
        "write-body works once",
    );
    ok(c1.write_data("b", &value), "write-data b");
    expect_err(
        c1.write_data("b2", &value),
        "second write-data of one value",
    );
    ok(OutgoingValue::finish(value), "finish b");
    // finish without write-data stores nothing.
    let value = OutgoingValue::new_outgoing_value();
    ok(write_body(&value, b"orphan"), "body of an unnamed value");
    expect_err(OutgoingValue::finish(value), "finish without write-data");
    // finish with the body stream still open.
    let value = OutgoingValue::new_outgoing_value();
    ok(c1.write_data("open", &value), "write-data open");
    let stream = value.outgoing_value_write_body().unwrap();
    ok(stream.write(b"x").map_err(stream_error), "write x");
    expect_err(
        OutgoingValue::finish(value),
        "finish before the stream is dropped",
    );
    drop(stream);
    expect(
        !ok(c1.has_object("open"), "has-object"),
        "a failed finish stores nothing",
    );
    // No body at all: an empty object.
    let value = OutgoingValue::new_outgoing_value();
    ok(c1.write_data("empty", &value), "write-data empty");
    ok(OutgoingValue::finish(value), "finish empty");
    expect(
        ok(read_async(&c1, "empty", 0, u64::MAX), "read empty").is_empty(),
        "empty object",
    );
    // A dropped value stores nothing.
    let value = OutgoingValue::new_outgoing_value();
    ok(c1.write_data("dropped", &value), "write-data dropped");
    drop(value);
    expect(
        !ok(c1.has_object("dropped"), "has-object"),
        "a dropped value stores nothing",
    );
    // write-data into a missing name's container after it was deleted.
    let gone = ok(blobstore::create_container("gone"), "create gone");
    ok(blobstore::delete_container("gone"), "delete gone");
    let value = OutgoingValue::new_outgoing_value();
    expect_err(
        gone.write_data("x", &value),
        "write-data into a deleted container",
    );
    expect_err(gone.has_object("x"), "has-object in a deleted container");
    drop(value);

    // Presence and metadata.
    expect(ok(c1.has_object("a"), "has-object a"), "a exists");
    expect(ok(c1.has_object("b"), "has-object b"), "b exists");
    expect(!ok(c1.has_object("zzz"), "has-object zzz"), "zzz absent");
    let meta = ok(c1.object_info("a"), "object-info a");
    expect(
        meta.name == "a"
            && meta.container == "c1"
            && meta.size == big.len() as u64
            && meta.created_at > 0,
        "object-info of a",
    );
    expect_err(c1.object_info("zzz"), "object-info of a missing object");

    // Reads: whole, ranges, clamping, errors.
    expect(
        ok(read_async(&c1, "a", 0, u64::MAX), "read a") == big,
        "a reads back whole",
    );
    expect(
        ok(read_sync(&c1, "a", 10, 19), "range") == big[10..20],
        "inclusive range 10..=19",
    );
    let tail_start = big.len() as u64 - 5;
    expect(
        ok(read_async(&c1, "a", tail_start, u64::MAX - 1), "tail") == big[big.len() - 5..],
        "end past the object is clamped",
    );
    let mid = (1u64 << 20) - 3;
    expect(
        ok(read_async(&c1, "a", mid, mid + (2 << 20)), "middle")
            == big[mid as usize..=(mid + (2 << 20)) as usize],
        "a range across chunk boundaries",
    );
    expect(
        ok(read_sync(&c1, "b", 6, 1000), "b tail") == b"world",
        "b tail clamped",
    );
    let one = ok(c1.get_data("b", 4, 4), "one byte");
    expect(one.size() == 1, "size of a one-byte range");
    expect(
        ok(
            IncomingValue::incoming_value_consume_sync(one),
            "consume one",
        ) == b"o",
        "byte 4 of b",
    );
    expect_err(c1.get_data("b", 5, 4), "start after end");
    expect_err(c1.get_data("b", 12, 20), "start past the end");
    let empty = ok(c1.get_data("b", 11, 11), "start at the end");
    expect(empty.size() == 0, "a range starting at the end is empty");
    drop(empty);
    expect_err(
        c1.get_data("missing", 0, 10),
        "get-data of a missing object",
    );

    // Replacing a name.
    ok(write_object(&c1, "b", b"replaced"), "replace b");
    expect(
        ok(read_sync(&c1, "b", 0, u64::MAX), "read b") == b"replaced",
        "b replaced",
    );

    // Listing, paged.
    let mut expected: Vec<String> = vec!["a".into(), "b".into(), "empty".into()];
    for i in 0..23 {
        let name = format!("x-{i:02}");
        ok(write_object(&c1, &name, name.as_bytes()), "write x");
        expected.push(name);
    }
    expected.sort();
    expect(
        list_all(&c1, 7) == expected,
        "list-objects pages through every name in byte order",
    );
    expect(
        list_all(&c1, u64::MAX) == expected,
        "a huge len is clamped, not an error",
    );
    let stream = ok(c1.list_objects(), "list-objects");
    let (none, end) = ok(stream.read_stream_object_names(0), "read 0");
    expect(none.is_empty() && !end, "a read of 0 names");
    let (skipped, end) = ok(stream.skip_stream_object_names(5), "skip 5");
    expect(skipped == 5 && !end, "skip 5");
    let (rest, end) = ok(stream.read_stream_object_names(1000), "read the rest");
    expect(end && rest == expected[5..], "the rest after a skip");
    let (after, end) = ok(stream.read_stream_object_names(10), "read after the end");
    expect(after.is_empty() && end, "reads after the end are empty");

    // Copy and move: metadata only; destinations replace.
    let c2 = ok(blobstore::create_container("c2"), "create c2");
    ok(
        blobstore::copy_object(&id("c1", "a"), &id("c2", "a-copy")),
        "copy a",
    );
    expect(
        ok(read_async(&c2, "a-copy", 0, u64::MAX), "read copy") == big,
        "copy reads the same bytes",
    );
    expect(
        ok(read_async(&c1, "a", 0, u64::MAX), "read a") == big,
        "source unchanged by copy",
    );
    expect_err(
        blobstore::copy_object(&id("c1", "a"), &id("nope", "a")),
        "copy into a missing container",
    );
    expect_err(
        blobstore::copy_object(&id("c1", "nope"), &id("c2", "a")),
        "copy of a missing object",
    );
    ok(
        blobstore::copy_object(&id("c1", "x-00"), &id("c2", "a-copy")),
        "copy over a-copy",
    );
    expect(
        ok(read_sync(&c2, "a-copy", 0, u64::MAX), "read") == b"x-00",
        "copy replaces the destination",
    );
    ok(
        blobstore::copy_object(&id("c1", "a"), &id("c1", "a")),
        "copy onto itself",
    );
    ok(
        blobstore::move_object(&id("c1", "b"), &id("c2", "b-moved")),
        "move b",
    );
    expect(
        !ok(c1.has_object("b"), "has b"),
        "a moved object leaves its source",
    );
    expect(
        ok(read_sync(&c2, "b-moved", 0, u64::MAX), "read moved") == b"replaced",
        "moved bytes",
    );
    expect_err(
        blobstore::move_object(&id("c1", "b"), &id("c2", "b")),
        "move of a missing object",
    );
    expect_err(
        blobstore::move_object(&id("c1", "a"), &id("nope", "a")),
        "move into a missing container",
    );
    ok(
        blobstore::move_object(&id("c1", "x-01"), &id("c1", "x-02")),
        "move over x-02",
    );
    expect(
        ok(read_sync(&c1, "x-02", 0, u64::MAX), "read") == b"x-01",
        "move replaces the destination",
    );
    ok(
        blobstore::move_object(&id("c1", "a"), &id("c1", "a")),
        "move onto itself",
    );
    expect(
        ok(c1.has_object("a"), "has a"),
        "a move onto itself keeps the object",
    );

    // A value keeps its bytes after its object is deleted.
    let held = ok(c1.get_data("x-03", 0, u64::MAX), "get x-03");
    ok(c1.delete_object("x-03"), "delete x-03");
    expect(
        ok(
            IncomingValue::incoming_value_consume_sync(held),
            "consume held",
        ) == b"x-03",
        "an incoming-value outlives its object's delete",
    );

    // Deletes.
    ok(c1.delete_object("x-04"), "delete x-04");
    expect(!ok(c1.has_object("x-04"), "has x-04"), "x-04 deleted");
    ok(
        c1.delete_object("never-there"),
        "delete-object of a missing object is no error",
    );
    ok(
        c1.delete_objects(&[
            "x-05".to_string(),
            "x-06".to_string(),
            "nope".to_string(),
            "x-05".to_string(),
        ]),
        "delete-objects",
    );
    expect(
        !ok(c1.has_object("x-05"), "has") && !ok(c1.has_object("x-06"), "has"),
        "delete-objects",
    );
    expect(ok(c1.has_object("x-07"), "has x-07"), "others stay");

    // Clear and delete-container.
    ok(c1.clear(), "clear");
    expect(list_all(&c1, 100).is_empty(), "clear empties the container");
    expect(
        ok(blobstore::container_exists("c1"), "exists"),
        "clear keeps the container",
    );
    ok(blobstore::delete_container("c2"), "delete c2");
    expect(
        !ok(blobstore::container_exists("c2"), "exists"),
        "c2 deleted",
    );
    expect_err(
        c2.has_object("a-copy"),
        "a deleted container's handle answers errors",
    );
    expect_err(c2.info(), "info of a deleted container");
    println!("ok all");
}

fn hostile() {
    let huge = "n".repeat(1 << 20);
    expect_err(blobstore::create_container(""), "empty container name");
    expect_err(blobstore::create_container(&huge), "huge container name");
    expect_err(blobstore::container_exists(&huge), "huge container name");
    expect_err(blobstore::get_container(&huge), "huge container name");
    expect_err(blobstore::delete_container(&huge), "huge container name");
    let c = open_or_create("h");
    ok(write_object(&c, "o", b"0123456789"), "write o");
    let value = OutgoingValue::new_outgoing_value();
    expect_err(c.write_data(&huge, &value), "huge object name");
    expect_err(c.write_data("", &value), "empty object name");
    drop(value);
    expect_err(c.has_object(&huge), "huge object name");
    expect_err(c.object_info(&huge), "huge object name");
    expect_err(c.get_data(&huge, 0, 1), "huge object name");
    expect_err(c.delete_object(&huge), "huge object name");
    expect_err(
        c.get_data("o", u64::MAX, u64::MAX),
        "start far past the end",
    );
    expect_err(c.get_data("o", u64::MAX, 0), "start after end");
    let names: Vec<String> = (0..5000).map(|i| format!("n{i}")).collect();
    expect_err(c.delete_objects(&names), "too many names in delete-objects");
    expect_err(
        blobstore::copy_object(&id("h", "o"), &id("h", &huge)),
        "copy to a huge name",
    );
    expect_err(
        blobstore::move_object(&id(&huge, "o"), &id("h", "p")),
        "move from a huge container name",
    );
    let stream = ok(c.list_objects(), "list");
    let (names, end) = ok(
        stream.read_stream_object_names(u64::MAX),
        "read u64::MAX names",
    );
    expect(names == ["o"] && end, "one name");
    let (skipped, end) = ok(stream.skip_stream_object_names(u64::MAX), "skip u64::MAX");
    expect(skipped == 0 && end, "nothing more");
    // A write over the check-write permit fails the value, not the plugin.
    let value = OutgoingValue::new_outgoing_value();
    ok(c.write_data("big-write", &value), "write-data big-write");
    let stream = value.outgoing_value_write_body().unwrap();
    expect(
        stream.write(&vec![0u8; 2 << 20]).is_err(),
        "a write over check-write fails",
    );
    drop(stream);
    expect_err(OutgoingValue::finish(value), "finish after a failed write");
    expect(
        !ok(c.has_object("big-write"), "has"),
        "a failed value stores nothing",
    );
    // Many values at once: past the limit each is an error, never a trap.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match c.get_data("o", 0, 9) {
            Ok(value) => held.push(value),
            Err(_) => refused += 1,
        }
    }
    expect(refused > 0, "open values are bounded");
    drop(held);
    expect(
        ok(read_sync(&c, "o", 0, 9), "read o") == b"0123456789",
        "values work again",
    );
    println!("ok hostile");
}
