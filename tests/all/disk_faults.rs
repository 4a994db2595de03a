//! The fault cases of `simulation.rs` once more on the real backend (cap-std
//! files on a real file system), which must pass the same tests.

use crate::simulation::try_put;
use tensor_blob_host::store::{ArtifactId, ProblemKind, Store, StoreError, StoreOptions};

fn open(path: &std::path::Path) -> Store {
    let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority()).unwrap();
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn read(store: &Store, id: &ArtifactId) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in store.manifest(id, 0, 1 << 16).unwrap() {
        out.extend_from_slice(&store.read_chunk(&chunk.digest).unwrap());
    }
    out
}

/// A size-limited tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir.path())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !status.status.success() {
            return Err(String::from_utf8_lossy(&status.stderr).trim().to_string());
        }
        Ok(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A full disk for real: on a 6 MiB tmpfs filled by eight artifacts in one
/// segment, a put fails with `NoSpace` and leaves nothing; every artifact
/// reads; a reopen (which needs no space) works; after deleting seven of
/// them GC frees space although the last one keeps the segment (it punches
/// holes in place), and puts succeed again. Skipped, with the reason
/// printed, where the machine does not allow mounting a tmpfs.
#[test]
fn a_full_real_disk_fails_writes_cleanly_and_gc_makes_room() {
    let disk = match SmallDisk::mount(6 << 20) {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: cannot mount a small tmpfs here: {reason}");
            return;
        }
    };
    let path = disk.dir.path();
    let store = open(path);
    let mut ids = Vec::new();
    let mut contents = Vec::new();
    for i in 0..64u32 {
        let len = if i == 0 { 1_500_000 } else { 400_000 };
        // Incompressible, so the disk fills as the sizes say.
        let mut bytes = vec![0u8; len];
        fastrand::Rng::with_seed(u64::from(i)).fill(&mut bytes);
        match try_put(&store, &bytes) {
            Ok(id) => {
                ids.push(id);
                contents.push(bytes);
            }
            Err(StoreError::NoSpace(_)) => break,
            Err(other) => panic!("put {i}: {other}"),
        }
    }
    assert!(
        ids.len() >= 3 && ids.len() < 64,
        "{} artifacts fit",
        ids.len()
    );
    let mut more = vec![0u8; 400_000];
    fastrand::Rng::with_seed(1000).fill(&mut more);
    assert!(matches!(
        try_put(&store, &more),
        Err(StoreError::NoSpace(_))
    ));
    assert_eq!(store.ids().count(), ids.len(), "nothing partial is visible");
    drop(store);
    let store = open(path);
    for (id, bytes) in ids.iter().zip(&contents) {
        assert_eq!(&read(&store, id), bytes);
    }
    for id in &ids[1..] {
        store.delete(id).unwrap();
    }
    let report = store.gc().unwrap();
    assert!(
        report.bytes_punched + report.bytes_reclaimed > 1_000_000,
        "{report:?}"
    );
    let new = try_put(&store, &[9u8; 400_000]).expect("puts succeed after delete and gc");
    drop(store);
    let store = open(path);
    assert_eq!(
        store.recovery_report().damage().count(),
        0,
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(read(&store, &ids[0]), contents[0]);
    assert_eq!(read(&store, &new), vec![9u8; 400_000]);
    assert!(store.verify_all().damaged.is_empty());
}

/// Bit rot is not a torn write, on real files: after a clean close, a bit
/// flipped in the newest (acknowledged) `meta.log` record is damage that
/// open reports; the artifact is not silently dropped as a torn tail.
#[test]
fn bit_rot_in_the_newest_meta_record_is_reported_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let (first, newest) = {
        let store = open(dir.path());
        (
            try_put(&store, b"first").unwrap(),
            try_put(&store, b"newest").unwrap(),
        )
    };
    let log = dir.path().join("meta.log");
    let mut bytes = std::fs::read(&log).unwrap();
    // The log ends with the newest commit, then the 13-byte checkpoint of
    // the clean close.
    let at = bytes.len() - 13 - 1;
    bytes[at] ^= 0x08;
    std::fs::write(&log, &bytes).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report();
    assert!(
        report.damage().any(|p| p.kind == ProblemKind::Damaged),
        "{report:?}"
    );
    assert!(store.exists(&first).unwrap());
    assert!(!store.exists(&newest).unwrap());
}

/// The same for the active segment: after a clean close its checkpoint
/// vouches for every record, so bit rot in the newest (acknowledged) chunk
/// is never cut off as a torn tail: the artifact stays listed, reads as
/// `Corrupted` (never other bytes) and `verify` names it.
#[test]
fn bit_rot_in_the_newest_chunk_is_reported_not_truncated_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let newest_bytes = vec![0x5Au8; 3000];
    let (first, newest) = {
        let store = open(dir.path());
        (
            try_put(&store, b"first").unwrap(),
            try_put(&store, &newest_bytes).unwrap(),
        )
    };
    let segment = dir.path().join("segments/0000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report();
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!(store.ids().count(), 2);
    assert_eq!(read(&store, &first), b"first");
    let chunk = store.manifest(&newest, 0, 1).unwrap()[0];
    assert!(matches!(
        store.read_chunk(&chunk.digest),
        Err(StoreError::Corrupted(_))
    ));
    let verified = store.verify_all();
    assert_eq!(verified.damaged.len(), 1);
    assert_eq!(verified.damaged[0].0, newest);
}

/// The full disk of the issue, through the CLI in real processes: a 48 MiB
/// tmpfs filled by eight artifacts in one segment; the ninth put fails with
/// a `no space` error line; a get still works; after seven deletes `tblob
/// gc` frees the space in place (before, it freed nothing, and every later
/// command failed at open writing a hint); the ninth put then succeeds and
/// `tblob verify` passes.
#[test]
fn a_full_disk_through_the_cli() {
    use crate::cli::{ok, tblob};
    let disk = match SmallDisk::mount(48 << 20) {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!("skipped: cannot mount a small tmpfs here: {reason}");
            return;
        }
    };
    let store = disk.dir.path().join("store");
    let files = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    let mut failed = None;
    for i in 0..12u64 {
        let path = files.path().join(format!("a{i}.bin"));
        std::fs::write(&path, crate::common::data(5_800_000, 40 + i)).unwrap();
        let out = tblob(&store, &["put", path.to_str().unwrap()]);
        if out.status.success() {
            ids.push((
                String::from_utf8(out.stdout).unwrap().trim().to_string(),
                path,
            ));
        } else {
            failed = Some((String::from_utf8_lossy(&out.stderr).to_string(), path));
            break;
        }
    }
    let (error, ninth) = failed.expect("the disk fills up");
    assert!(error.starts_with("tblob: no space"), "{error}");
    assert!(ids.len() >= 6, "{} puts fit", ids.len());
    let out_file = files.path().join("back");
    ok(&tblob(
        &store,
        &["get", &ids[0].0, "-o", out_file.to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&ids[0].1).unwrap()
    );
    for (id, _) in &ids[1..] {
        ok(&tblob(&store, &["rm", id]));
    }
    let stat_before = ok(&tblob(&store, &["stat", "--json"]));
    let gc = ok(&tblob(&store, &["gc"]));
    assert!(gc.contains("freed") || gc.contains("reclaimed"), "{gc}");
    // `stat` tells the truth about the disk after holes were punched.
    let disk_bytes = |json: &str| -> u64 {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["disk_bytes"].as_u64().unwrap()
    };
    let stat_after = ok(&tblob(&store, &["stat", "--json"]));
    assert!(
        disk_bytes(&stat_after) * 3 < disk_bytes(&stat_before),
        "{stat_before} then {stat_after}"
    );
    ok(&tblob(&store, &["put", ninth.to_str().unwrap()]));
    ok(&tblob(&store, &["verify"]));
}
