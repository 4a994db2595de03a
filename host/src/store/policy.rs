//! The tenant policy file, `policy` in the store directory: the tenant's
//! [`TenantPolicy`] (quota and plugin limits), replaced whole and
//! crash-safely, read once at open. Never decides what a limit means: that
//! is `upload.rs` (quotas) and `runtime/plugin.rs` (plugin limits).
//!
//! Written like every file the store replaces: to `policy.tmp`, synced,
//! renamed over `policy`, the directory synced. So after a crash the file
//! holds the old policy or the new one, whole. A file that fails its checks
//! (length, magic, version, reserved bits, crc) is damage, never a torn
//! write, and the open fails with `Corrupted` rather than run the tenant
//! unlimited.
//!
//! Layout (68 bytes, little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `"TBPL"` |
//! | 4 | 1 | version (1) |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | presence bits: bit i set = field i is a limit, clear = unlimited |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 × 6 | fields: bytes, artifacts, artifact bytes, writers, plugin memory bytes, plugin time limit (ns); zero when absent |
//! | 64 | 4 | CRC-32 of bytes 0..64 |

use std::time::Duration;

use super::backend::{Backend, OpenMode};
use super::fsync::Fsyncs;
use super::{Quota, StoreError, TenantPolicy};

/// Name of the policy file in the store directory.
pub const POLICY_NAME: &str = "policy";
/// Name of a policy being written, renamed to [`POLICY_NAME`] once synced.
pub const POLICY_TMP_NAME: &str = "policy.tmp";

const POLICY_MAGIC: [u8; 4] = *b"TBPL";
const POLICY_VERSION: u8 = 1;
/// Limits the file holds, in the order of the layout.
const POLICY_FIELDS: usize = 6;
/// Where the fields start.
const POLICY_FIELDS_OFFSET: usize = 16;
/// Offset of the trailing crc, which covers every byte before it.
const POLICY_CRC_OFFSET: usize = POLICY_FIELDS_OFFSET + 8 * POLICY_FIELDS;
/// The file's exact length.
pub const POLICY_FILE_BYTES: usize = POLICY_CRC_OFFSET + 4;

fn fields(policy: &TenantPolicy) -> [Option<u64>; POLICY_FIELDS] {
    [
        policy.quota.bytes_max,
        policy.quota.artifacts_max,
        policy.quota.artifact_bytes_max,
        policy.quota.writers_max,
        policy.plugin_memory_bytes_max,
        // Saturates past 584 years: a limit that long is no limit anyway.
        policy
            .plugin_time_limit
            .map(|limit| u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX)),
    ]
}

/// The file's bytes for `policy`.
pub fn encode(policy: &TenantPolicy) -> [u8; POLICY_FILE_BYTES] {
    let mut bytes = [0u8; POLICY_FILE_BYTES];
    bytes[0..4].copy_from_slice(&POLICY_MAGIC);
    bytes[4] = POLICY_VERSION;
    let mut present = 0u32;
    for (i, field) in fields(policy).into_iter().enumerate() {
        if let Some(value) = field {
            present |= 1 << i;
            let at = POLICY_FIELDS_OFFSET + 8 * i;
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    bytes[8..12].copy_from_slice(&present.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..POLICY_CRC_OFFSET]);
    bytes[POLICY_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Parses the file's bytes; `Err` says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<TenantPolicy, String> {
    if bytes.len() != POLICY_FILE_BYTES {
        return Err(format!(
            "{} bytes, a policy file is {POLICY_FILE_BYTES}",
            bytes.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let crc = crc32fast::hash(&bytes[..POLICY_CRC_OFFSET]);
    if crc != u32_at(POLICY_CRC_OFFSET) {
        return Err("its checksum does not match".into());
    }
    if bytes[0..4] != POLICY_MAGIC {
        return Err("not a policy file (bad magic)".into());
    }
    if bytes[4] != POLICY_VERSION {
        return Err(format!(
            "version {}, this build reads {POLICY_VERSION}",
            bytes[4]
        ));
    }
    let present = u32_at(8);
    if bytes[5..8] != [0; 3] || u32_at(12) != 0 || present >> POLICY_FIELDS != 0 {
        return Err("reserved bits are set".into());
    }
    let field = |i: usize| {
        let at = POLICY_FIELDS_OFFSET + 8 * i;
        (present & (1 << i) != 0)
            .then(|| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")))
    };
    Ok(TenantPolicy {
        quota: Quota {
            bytes_max: field(0),
            artifacts_max: field(1),
            artifact_bytes_max: field(2),
            writers_max: field(3),
        },
        plugin_memory_bytes_max: field(4),
        plugin_time_limit: field(5).map(Duration::from_nanos),
    })
}

/// Removes a [`POLICY_TMP_NAME`] a crash left: it was never renamed, so
/// never in force. Kept apart from [`read`], which writes nothing.
pub fn remove_leftover(dir: &dyn Backend) -> Result<(), StoreError> {
    match dir.remove(POLICY_TMP_NAME) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("removing {POLICY_TMP_NAME}"), e)),
    }
}

/// The policy stored in `dir`, `None` if it has none. A damaged file is
/// `Corrupted`.
pub fn read(dir: &dyn Backend) -> Result<Option<TenantPolicy>, StoreError> {
    let file = match dir.open(POLICY_NAME, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("opening {POLICY_NAME}"), e)),
    };
    let len = file
        .len()
        .map_err(|e| StoreError::io(format!("reading {POLICY_NAME}"), e))?;
    // Checked before reading: a huge file is refused without allocating.
    if len != POLICY_FILE_BYTES as u64 {
        return Err(StoreError::Corrupted(format!(
            "{POLICY_NAME}: {len} bytes, a policy file is {POLICY_FILE_BYTES}; the tenant's limits are unknown (rewrite it with `tblob quota set`, or remove it for the defaults)"
        )));
    }
    let mut bytes = [0u8; POLICY_FILE_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| StoreError::io(format!("reading {POLICY_NAME}"), e))?;
    decode(&bytes).map(Some).map_err(|why| {
        StoreError::Corrupted(format!(
            "{POLICY_NAME}: {why}; the tenant's limits are unknown (remove the file for the defaults)"
        ))
    })
}

/// Puts `policy` in place in `dir`: temp file, synced (if `durable`),
/// renamed over [`POLICY_NAME`]. On failure the old policy is still in
/// place. The caller syncs `dir` afterwards (see [`sync_dir`]): only then
/// does the rename survive a power cut.
pub fn write(
    dir: &dyn Backend,
    policy: &TenantPolicy,
    durable: bool,
    fsyncs: &Fsyncs,
) -> Result<(), StoreError> {
    let bytes = encode(policy);
    let result = (|| {
        let file = dir.open(POLICY_TMP_NAME, OpenMode::Truncate)?;
        file.write_all_at(&bytes, 0)?;
        if durable {
            fsyncs.all(&*file)?;
        }
        dir.rename(POLICY_TMP_NAME, POLICY_NAME)
    })();
    if let Err(e) = result {
        let _ = dir.remove(POLICY_TMP_NAME);
        return Err(StoreError::io(format!("writing {POLICY_NAME}"), e));
    }
    Ok(())
}

/// Syncs the directory entry [`write`] renamed into place.
pub fn sync_dir(dir: &dyn Backend, fsyncs: &Fsyncs) -> Result<(), StoreError> {
    fsyncs
        .dir(dir)
        .map_err(|e| StoreError::io(format!("syncing the directory of {POLICY_NAME}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_and_damage_is_refused() {
        let policy = TenantPolicy {
            quota: Quota {
                bytes_max: Some(10 << 30),
                artifacts_max: None,
                artifact_bytes_max: Some(0),
                writers_max: Some(3),
            },
            plugin_memory_bytes_max: Some(64 << 20),
            plugin_time_limit: Some(Duration::from_millis(1500)),
        };
        let bytes = encode(&policy);
        assert_eq!(decode(&bytes).unwrap(), policy);
        assert_eq!(
            decode(&encode(&TenantPolicy::default())).unwrap(),
            TenantPolicy::default()
        );
        for i in 0..POLICY_FILE_BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipped bit in byte {i} accepted");
        }
        assert!(decode(&bytes[..POLICY_FILE_BYTES - 1]).is_err());
    }
}
