//! Test plugin importing both `tensor:blob/blobs` and
//! `wasi:blobstore/blobstore@0.2.0-draft` (from the project's `wit/`):
//! an object written through one is an artifact the other sees, and
//! deleting that artifact by id deletes the object. Prints `ok dual`, or
//! exits 1 naming the first mismatch.

wit_bindgen::generate!({
    inline: "
        package test:dual;
        world dual {
            import tensor:blob/blobs@0.1.0;
            import wasi:blobstore/blobstore@0.2.0-draft;
        }
    ",
    path: "../../../wit",
    world: "test:dual/dual",
    generate_all,
});

use tensor::blob::blobs;
use wasi::blobstore::blobstore;
use wasi::blobstore::types::OutgoingValue;

fn expect(condition: bool, what: &str) {
    if !condition {
        eprintln!("dual-plugin: FAILED: {what}");
        std::process::exit(1);
    }
}

fn main() {
    let container = blobstore::create_container("d").expect("create-container");
    let value = OutgoingValue::new_outgoing_value();
    container.write_data("o", &value).expect("write-data");
    let body = value.outgoing_value_write_body().expect("write-body");
    body.blocking_write_and_flush(b"dual").expect("write");
    drop(body);
    OutgoingValue::finish(value).expect("finish");
    let ids = blobs::list(None, 10).expect("list");
    expect(ids.len() == 1, "blobs.list sees the object's artifact");
    expect(
        blobs::get(&ids[0]).expect("get") == b"dual",
        "blobs.get reads the object",
    );
    blobs::delete(&ids[0]).expect("delete");
    expect(
        !container.has_object("o").expect("has-object"),
        "deleting the artifact deletes the object",
    );
    println!("ok dual");
}
