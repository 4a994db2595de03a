//! An in-memory simulated disk: a [`Backend`] that is deterministic from a
//! seed, records every operation, injects faults and cuts the power,
//! leaving an image a real disk could be left with under the contract of
//! [`super`]. It is the judge of what the store may assume of a disk, so it
//! models that contract strictly and adversarially: whatever the contract
//! does not promise, some seed takes away.
//!
//! # The model
//!
//! - A file is a node (an inode) with `visible` bytes (what reads return),
//!   `durable` bytes (what is on the platters) and the operations pending
//!   since its last successful sync, in order: `Write{offset, bytes,
//!   doomed}`, `SetLen{len, doomed}` and `Punch{offset, len}`.
//! - `write_all_at` and `set_len` change `visible` at once (writes past the
//!   end extend the file with zeros) and append a pending operation.
//! - `sync_data` and `sync_all` (alike): on success `durable` becomes the
//!   old `durable` with every pending operation that is not doomed applied
//!   in order, and nothing is pending any more. On a (injected) failure
//!   every pending operation is marked doomed, as a kernel drops the dirty
//!   pages of a failed writeback: no later sync brings them back, although
//!   `visible` keeps showing them ("fsyncgate").
//! - `punch_hole` zeros its range (cut to the file's length) in `visible`
//!   and in `durable` at once, as durable metadata, and stays pending too so
//!   that a power cut re-applies it after the unsynced writes before it.
//! - The power cut image of a file starts from `durable`; each pending
//!   operation, in order: a doomed one is lost; a write is kept whole (40%),
//!   lost (30%) or torn (30%: each 512-byte sector of it, aligned to
//!   absolute file offsets, the first and last maybe partial, kept or not
//!   on its own); kept bytes extend the file with zeros if past its end; a
//!   length change is applied or not (50/50); a punch is always applied.
//! - A directory is a node with `visible` and `durable` entries and the
//!   entry operations since its last successful [`Backend::sync`]:
//!   `Link{name, node}` (a create), `Unlink{name, node}`, `Rename{from, to,
//!   node}`. A successful sync makes `durable` equal `visible`; a failed one
//!   leaves the operations pending.
//! - The power cut image of a directory starts from `durable`; each pending
//!   operation survives on its own with probability 1/2 and is applied in
//!   order. A `Link` inserts (replacing whatever the name held); an
//!   `Unlink` or `Rename` applies only if its name holds, at that point of
//!   the image, the very node it named when it was done, else it is skipped
//!   (so a rename never moves some older file into its target: the target
//!   holds the old file or the new one); a surviving `Rename` moves the
//!   entry atomically, replacing the target. The image holds the
//!   directories reachable from the root's image and their files; every
//!   other node is gone. Locks and open handles do not survive.
//! - Open handles name the node, not the entry: after `remove` or a rename
//!   over it a handle keeps reading and writing its node (an unlinked
//!   inode). `remove` of a directory is refused unless it is empty;
//!   `rename` of or over a directory is refused (the store never does it).
//! - Space: a file allocates its visible length minus the bytes inside
//!   punched holes (a later write into a hole allocates it again; a length
//!   extended by `set_len` counts as allocated); the disk uses the sum over
//!   the files linked in a visible directory or held by an open handle.
//!   Beyond [`SimDisk::set_space_limit`] a write writes the prefix that fits
//!   and fails with `StorageFull`; a `set_len` that does not fit changes
//!   nothing and fails so. Overwriting allocated bytes never fails for space.
//! - Faults, scheduled ([`SimDisk::fail_op`], counting operations of a kind
//!   from when it was scheduled) or random ([`SimDisk::set_fault_rate`]):
//!   `Write` covers `write_all_at` and a `set_len` that extends, `Read`
//!   covers `read_exact_at` and `len`, `Sync` the file syncs, `DirSync`
//!   [`Backend::sync`], `Open` covers `open` and `dir`; `Rename` and
//!   `Remove` as named. An operation counts once it reaches the disk (the
//!   disk is on, the names are valid, the handle may write). An injected
//!   EIO writes nothing; a short write writes a random prefix (maybe empty)
//!   then fails with EIO; `NoSpace` fails with `StorageFull` at once. A
//!   failed rename, remove, open or directory sync changes nothing.
//!   [`SimDisk::set_punch_unsupported`] makes `punch_hole` fail with
//!   `Unsupported`. An empty read or write succeeds at once, as with
//!   `FileExt`: it makes no system call, so it is no operation.
//!
//! Every random choice comes from one `fastrand::Rng` seeded by
//! [`SimDisk::new`]; there is no time and no thread of its own, so a test
//! that makes the same calls in the same order sees the same disk.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{check_name, Backend, BackendFile, Entry, EntryKind, LockGuard, OpenMode};

/// The sector a torn write keeps or loses as a whole.
const SECTOR: u64 = 512;
/// How many operations the trace keeps.
const TRACE_LEN: usize = 10_000;
/// The largest file the simulation holds (it keeps files in memory).
const MAX_FILE_LEN: u64 = 1 << 36;

type NodeId = u64;
const ROOT: NodeId = 0;

/// A kind of operation faults are injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    Write,
    Read,
    Sync,
    DirSync,
    Rename,
    Remove,
    Open,
}

impl FaultOp {
    fn index(self) -> usize {
        self as usize
    }

    fn key(self) -> &'static str {
        match self {
            FaultOp::Write => "write",
            FaultOp::Read => "read",
            FaultOp::Sync => "sync",
            FaultOp::DirSync => "dir-sync",
            FaultOp::Rename => "rename",
            FaultOp::Remove => "remove",
            FaultOp::Open => "open",
        }
    }
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fails with EIO, changing nothing.
    Eio,
    /// Writes a prefix (a random length, possibly 0) then fails with EIO;
    /// on anything but a write, the same as `Eio`.
    ShortWrite,
    /// Fails with `StorageFull` at once, changing nothing.
    NoSpace,
}

/// What the disk did, over its whole life (carried across crashes). The
/// operation counts are of calls that reached the disk, failed ones
/// included.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub writes: u64,
    pub write_bytes: u64,
    /// `write_bytes` by path (from the disk's root).
    pub write_bytes_per_file: std::collections::BTreeMap<String, u64>,
    pub reads: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub renames: u64,
    pub removes: u64,
    pub creates: u64,
    pub punches: u64,
    pub crashes: u64,
    /// Injected faults by kind: "eio-write", "short-write", "no-space",
    /// "eio-read", "eio-sync", "eio-dir-sync", "eio-rename", "eio-remove",
    /// "eio-open".
    pub faults: BTreeMap<String, u64>,
    /// Unsynced writes a power cut tore (kept some sectors of).
    pub torn_writes: u64,
    /// Unsynced writes a power cut lost whole (doomed ones included).
    pub lost_writes: u64,
    /// Unsynced directory entry operations a power cut lost.
    pub lost_entries: u64,
}

/// The disk's handle: clones share one disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<Disk>>,
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

fn off_error() -> io::Error {
    io::Error::other("simulated power cut: this disk is off")
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn no_space() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated disk full")
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what}: no such file or directory"),
    )
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Sorted, disjoint, non-adjacent half-open byte ranges: the holes of a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Holes(Vec<(u64, u64)>);

impl Holes {
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.0 = out;
    }

    fn remove(&mut self, start: u64, end: u64) {
        if start >= end || self.0.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b <= start || a >= end {
                out.push((a, b));
                continue;
            }
            if a < start {
                out.push((a, start));
            }
            if b > end {
                out.push((end, b));
            }
        }
        self.0 = out;
    }

    fn clip(&mut self, len: u64) {
        self.remove(len, u64::MAX);
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }

    /// Bytes of holes inside `start..end`.
    fn overlap(&self, start: u64, end: u64) -> u64 {
        self.0
            .iter()
            .map(|&(a, b)| b.min(end).saturating_sub(a.max(start)))
            .sum()
    }
}

/// The bytes of one copy of a file, with its holes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Image {
    bytes: Vec<u8>,
    holes: Holes,
}

impl Image {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Writes `data` at `offset`, extending with zeros; allocates its range.
    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        if self.len() < end {
            self.bytes.resize(end as usize, 0);
        }
        self.bytes[offset as usize..end as usize].copy_from_slice(data);
        self.holes.remove(offset, end);
    }

    fn set_len(&mut self, len: u64) {
        self.bytes.resize(len as usize, 0);
        self.holes.clip(len);
    }

    /// Zeros `offset..offset + len` (cut to the length) and frees it.
    fn punch(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.len());
        if offset >= end {
            return;
        }
        self.bytes[offset as usize..end as usize].fill(0);
        self.holes.add(offset, end);
    }

    fn allocated(&self) -> u64 {
        self.len() - self.holes.total()
    }
}

#[derive(Clone, Debug)]
enum FileOp {
    Write {
        offset: u64,
        bytes: Vec<u8>,
        doomed: bool,
    },
    SetLen {
        len: u64,
        doomed: bool,
    },
    Punch {
        offset: u64,
        len: u64,
    },
}

impl FileOp {
    fn apply(&self, image: &mut Image) {
        match self {
            FileOp::Write { offset, bytes, .. } => image.write(*offset, bytes),
            FileOp::SetLen { len, .. } => image.set_len(*len),
            FileOp::Punch { offset, len } => image.punch(*offset, *len),
        }
    }

    fn doomed(&self) -> bool {
        match self {
            FileOp::Write { doomed, .. } | FileOp::SetLen { doomed, .. } => *doomed,
            FileOp::Punch { .. } => false,
        }
    }

    fn doom(&mut self) {
        match self {
            FileOp::Write { doomed, .. } | FileOp::SetLen { doomed, .. } => *doomed = true,
            FileOp::Punch { .. } => {}
        }
    }
}

#[derive(Debug, Default)]
struct FileNode {
    visible: Image,
    durable: Image,
    pending: Vec<FileOp>,
    /// Entries naming it in visible directories.
    nlink: u32,
    /// Open handles.
    handles: u32,
    /// `durable` plus `pending` is no longer `visible` (a failed sync
    /// doomed writes, or a test damaged the file).
    diverged: bool,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link {
        name: String,
        node: NodeId,
    },
    Unlink {
        name: String,
        node: NodeId,
    },
    Rename {
        from: String,
        to: String,
        node: NodeId,
    },
}

impl DirOp {
    fn apply(&self, map: &mut BTreeMap<String, NodeId>) {
        match self {
            DirOp::Link { name, node } => {
                map.insert(name.clone(), *node);
            }
            DirOp::Unlink { name, node } => {
                if map.get(name) == Some(node) {
                    map.remove(name);
                }
            }
            DirOp::Rename { from, to, node } => {
                if map.get(from) == Some(node) {
                    map.remove(from);
                    map.insert(to.clone(), *node);
                }
            }
        }
    }

    fn node(&self) -> NodeId {
        match self {
            DirOp::Link { node, .. } | DirOp::Unlink { node, .. } | DirOp::Rename { node, .. } => {
                *node
            }
        }
    }
}

#[derive(Debug, Default)]
struct DirNode {
    visible: BTreeMap<String, NodeId>,
    durable: BTreeMap<String, NodeId>,
    pending: Vec<DirOp>,
    /// Removed from its parent (it is empty and takes no new entries).
    removed: bool,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

struct Scheduled {
    op: FaultOp,
    remaining: u64,
    fault: Fault,
}

struct Disk {
    off: bool,
    nodes: BTreeMap<NodeId, Node>,
    next_id: NodeId,
    rng: fastrand::Rng,
    stats: SimStats,
    scheduled: Vec<Scheduled>,
    rates: [u32; 7],
    space_limit: Option<u64>,
    punch_unsupported: bool,
    /// Bytes allocated by live files (kept up to date by every change).
    used: u64,
    locks: BTreeSet<(NodeId, String)>,
    trace: VecDeque<String>,
}

impl Disk {
    fn new(rng: fastrand::Rng) -> Disk {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        Disk {
            off: false,
            nodes,
            next_id: ROOT + 1,
            rng,
            stats: SimStats::default(),
            scheduled: Vec::new(),
            rates: [0; 7],
            space_limit: None,
            punch_unsupported: false,
            used: 0,
            locks: BTreeSet::new(),
            trace: VecDeque::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn check_on(&self) -> io::Result<()> {
        if self.off {
            Err(off_error())
        } else {
            Ok(())
        }
    }

    /// The fault, if any, that hits this operation of kind `op`.
    fn take_fault(&mut self, op: FaultOp) -> Option<Fault> {
        let mut fired = None;
        self.scheduled.retain_mut(|s| {
            if s.op != op {
                return true;
            }
            if s.remaining == 0 {
                fired.get_or_insert(s.fault);
                false
            } else {
                s.remaining -= 1;
                true
            }
        });
        if fired.is_none() {
            let rate = self.rates[op.index()];
            if rate > 0 && self.rng.u32(0..1_000_000) < rate {
                fired = Some(if op == FaultOp::Write && self.rng.bool() {
                    Fault::ShortWrite
                } else {
                    Fault::Eio
                });
            }
        }
        fired
    }

    /// Records an injected fault and returns its error.
    fn fault_error(&mut self, op: FaultOp, fault: Fault, what: &str) -> io::Error {
        let (key, error) = match fault {
            Fault::NoSpace => ("no-space".to_string(), no_space()),
            Fault::ShortWrite if op == FaultOp::Write => ("short-write".to_string(), eio()),
            _ => (format!("eio-{}", op.key()), eio()),
        };
        self.note(format!("FAULT {key}: {what}"));
        *self.stats.faults.entry(key).or_insert(0) += 1;
        error
    }

    /// Checks for a fault on an operation that changes nothing when it fails.
    fn fail(&mut self, op: FaultOp, what: &str) -> io::Result<()> {
        match self.take_fault(op) {
            Some(fault) => Err(self.fault_error(op, fault, what)),
            None => Ok(()),
        }
    }

    fn file(&self, id: NodeId) -> &FileNode {
        match self.nodes.get(&id) {
            Some(Node::File(f)) => f,
            _ => panic!("sim invariant: the node {id} of an open handle is gone"),
        }
    }

    fn file_mut(&mut self, id: NodeId) -> &mut FileNode {
        match self.nodes.get_mut(&id) {
            Some(Node::File(f)) => f,
            _ => panic!("sim invariant: the node {id} of an open handle is gone"),
        }
    }

    fn dir_node(&self, id: NodeId, path: &str) -> io::Result<&DirNode> {
        match self.nodes.get(&id) {
            Some(Node::Dir(d)) if !d.removed => Ok(d),
            _ => Err(not_found(path)),
        }
    }

    fn dir_mut(&mut self, id: NodeId, path: &str) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(d)) if !d.removed => Ok(d),
            _ => Err(not_found(path)),
        }
    }

    fn is_dir(&self, id: NodeId) -> bool {
        matches!(self.nodes.get(&id), Some(Node::Dir(_)))
    }

    /// What `id` adds to `used` now.
    fn contribution(&self, id: NodeId) -> u64 {
        match self.nodes.get(&id) {
            Some(Node::File(f)) if f.nlink > 0 || f.handles > 0 => f.visible.allocated(),
            _ => 0,
        }
    }

    /// Updates `used` after a change to `id`, which contributed `before`.
    fn account(&mut self, id: NodeId, before: u64) {
        let after = self.contribution(id);
        self.used = self.used + after - before;
    }

    fn recount_used(&self) -> u64 {
        self.nodes.keys().map(|&id| self.contribution(id)).sum()
    }

    /// Creates a node named `name` in directory `dir`: a pending `Link`.
    fn create(&mut self, dir: NodeId, path: &str, name: &str, node: Node) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        let is_dir = matches!(node, Node::Dir(_));
        let node = match node {
            Node::File(mut f) => {
                f.nlink = 1;
                Node::File(f)
            }
            dir_node => dir_node,
        };
        self.nodes.insert(id, node);
        if let Ok(d) = self.dir_mut(dir, path) {
            d.visible.insert(name.to_string(), id);
            d.pending.push(DirOp::Link {
                name: name.to_string(),
                node: id,
            });
        }
        self.stats.creates += 1;
        let kind = if is_dir { "mkdir" } else { "create" };
        self.note(format!("{kind} {}", join(path, name)));
        id
    }

    /// Drops one visible link to `id`.
    fn unlink_node(&mut self, id: NodeId) {
        let before = self.contribution(id);
        match self.nodes.get_mut(&id) {
            Some(Node::File(f)) => f.nlink = f.nlink.saturating_sub(1),
            Some(Node::Dir(d)) => d.removed = true,
            None => {}
        }
        self.account(id, before);
    }

    /// Forgets the nodes nothing can reach any more: not named by any
    /// directory's visible or durable entries or pending operations (of a
    /// directory still reachable so), and not held by an open handle.
    fn sweep(&mut self) {
        let mut stack: Vec<NodeId> = vec![ROOT];
        for (&id, node) in &self.nodes {
            if let Node::File(f) = node {
                if f.handles > 0 {
                    stack.push(id);
                }
            }
        }
        let mut marked = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !marked.insert(id) {
                continue;
            }
            if let Some(Node::Dir(d)) = self.nodes.get(&id) {
                stack.extend(d.visible.values().copied());
                stack.extend(d.durable.values().copied());
                stack.extend(d.pending.iter().map(DirOp::node));
            }
        }
        self.nodes.retain(|id, _| marked.contains(id));
    }

    // ---- directory operations ----

    fn dir(
        &mut self,
        at: NodeId,
        path: &str,
        name: &str,
        create: bool,
    ) -> io::Result<(NodeId, bool)> {
        self.check_on()?;
        check_name(name)?;
        let full = join(path, name);
        self.dir_node(at, path)?;
        self.fail(FaultOp::Open, &format!("dir {full}"))?;
        match self.dir_node(at, path)?.visible.get(name).copied() {
            Some(id) if self.is_dir(id) => Ok((id, false)),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{full} is a file, not a directory"),
            )),
            None if !create => Err(not_found(&full)),
            None => Ok((
                self.create(at, path, name, Node::Dir(DirNode::default())),
                true,
            )),
        }
    }

    fn list(&mut self, at: NodeId, path: &str) -> io::Result<Vec<Entry>> {
        self.check_on()?;
        let d = self.dir_node(at, path)?;
        Ok(d.visible
            .iter()
            .map(|(name, &id)| Entry {
                name: name.clone(),
                kind: if self.is_dir(id) {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
            })
            .collect())
    }

    /// Opens `name`, counting a new handle on its node.
    fn open(&mut self, at: NodeId, path: &str, name: &str, mode: OpenMode) -> io::Result<NodeId> {
        self.check_on()?;
        check_name(name)?;
        let full = join(path, name);
        self.dir_node(at, path)?;
        self.fail(FaultOp::Open, &format!("open {full} {mode:?}"))?;
        let existing = self.dir_node(at, path)?.visible.get(name).copied();
        if let Some(id) = existing {
            if mode == OpenMode::CreateNew {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{full} exists"),
                ));
            }
            if self.is_dir(id) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{full} is a directory"),
                ));
            }
        }
        let id = match (existing, mode) {
            (None, OpenMode::Read | OpenMode::Write) => return Err(not_found(&full)),
            (None, _) => self.create(at, path, name, Node::File(FileNode::default())),
            (Some(id), OpenMode::Truncate) => {
                let before = self.contribution(id);
                let f = self.file_mut(id);
                f.visible.set_len(0);
                f.pending.push(FileOp::SetLen {
                    len: 0,
                    doomed: false,
                });
                self.account(id, before);
                self.note(format!("truncate {full}"));
                id
            }
            (Some(id), _) => id,
        };
        let before = self.contribution(id);
        self.file_mut(id).handles += 1;
        self.account(id, before);
        Ok(id)
    }

    fn remove(&mut self, at: NodeId, path: &str, name: &str) -> io::Result<()> {
        self.check_on()?;
        check_name(name)?;
        let full = join(path, name);
        self.dir_node(at, path)?;
        self.stats.removes += 1;
        self.fail(FaultOp::Remove, &format!("remove {full}"))?;
        let Some(id) = self.dir_node(at, path)?.visible.get(name).copied() else {
            return Err(not_found(&full));
        };
        if let Some(Node::Dir(d)) = self.nodes.get(&id) {
            if !d.visible.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    format!("{full} is a directory that is not empty"),
                ));
            }
        }
        let d = self.dir_mut(at, path)?;
        d.visible.remove(name);
        d.pending.push(DirOp::Unlink {
            name: name.to_string(),
            node: id,
        });
        self.unlink_node(id);
        self.note(format!("remove {full}"));
        Ok(())
    }

    fn rename(&mut self, at: NodeId, path: &str, from: &str, to: &str) -> io::Result<()> {
        self.check_on()?;
        check_name(from)?;
        check_name(to)?;
        self.dir_node(at, path)?;
        self.stats.renames += 1;
        let what = format!("rename {} -> {to}", join(path, from));
        self.fail(FaultOp::Rename, &what)?;
        let d = self.dir_node(at, path)?;
        let Some(id) = d.visible.get(from).copied() else {
            return Err(not_found(&join(path, from)));
        };
        let target = d.visible.get(to).copied();
        if self.is_dir(id) || target.is_some_and(|t| self.is_dir(t)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what}: the simulated disk renames files only"),
            ));
        }
        if from == to {
            return Ok(());
        }
        let d = self.dir_mut(at, path)?;
        d.visible.remove(from);
        d.visible.insert(to.to_string(), id);
        d.pending.push(DirOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
            node: id,
        });
        if let Some(t) = target {
            self.unlink_node(t);
        }
        self.note(what);
        Ok(())
    }

    fn sync_dir(&mut self, at: NodeId, path: &str) -> io::Result<()> {
        self.check_on()?;
        self.dir_node(at, path)?;
        self.stats.dir_syncs += 1;
        let what = format!("dir-sync /{path}");
        self.fail(FaultOp::DirSync, &what)?;
        let d = self.dir_mut(at, path)?;
        for op in std::mem::take(&mut d.pending) {
            op.apply(&mut d.durable);
        }
        debug_assert_eq!(d.durable, d.visible, "sim invariant: a synced directory");
        self.note(what);
        self.sweep();
        Ok(())
    }

    fn lock_name(&mut self, at: NodeId, path: &str, name: &str) -> io::Result<()> {
        self.check_on()?;
        check_name(name)?;
        let full = join(path, name);
        match self.dir_node(at, path)?.visible.get(name).copied() {
            Some(id) if self.is_dir(id) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{full} is a directory"),
                ))
            }
            Some(_) => {}
            None => {
                self.create(at, path, name, Node::File(FileNode::default()));
            }
        }
        if !self.locks.insert((at, name.to_string())) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{full} is locked"),
            ));
        }
        self.note(format!("lock {full}"));
        Ok(())
    }

    // ---- file operations ----

    fn len(&mut self, id: NodeId, path: &str) -> io::Result<u64> {
        self.check_on()?;
        self.fail(FaultOp::Read, &format!("len {path}"))?;
        Ok(self.file(id).visible.len())
    }

    fn allocated(&mut self, id: NodeId) -> io::Result<u64> {
        self.check_on()?;
        Ok(self.file(id).visible.allocated())
    }

    fn read(&mut self, id: NodeId, path: &str, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_on()?;
        if buf.is_empty() {
            // Like `FileExt::read_exact_at`: nothing to read, no system call.
            return Ok(());
        }
        self.stats.reads += 1;
        self.fail(
            FaultOp::Read,
            &format!("read {path} @{offset} +{}", buf.len()),
        )?;
        let bytes = &self.file(id).visible.bytes;
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= bytes.len() as u64 => {
                buf.copy_from_slice(&bytes[offset as usize..end as usize]);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read {path} @{offset} +{} past its end {}",
                    buf.len(),
                    bytes.len()
                ),
            )),
        }
    }

    /// How many bytes of a write of `len` at `offset` fit in `budget`
    /// newly allocated bytes.
    fn fit(&self, id: NodeId, offset: u64, len: u64, budget: u64) -> u64 {
        let image = &self.file(id).visible;
        let file_len = image.len();
        let cost = |p: u64| -> u64 {
            if p == 0 {
                return 0;
            }
            let end = offset + p;
            let gap = offset.saturating_sub(file_len);
            let in_holes = image.holes.overlap(offset, end.min(file_len));
            let beyond = end.saturating_sub(file_len.max(offset));
            gap + in_holes + beyond
        };
        if cost(len) <= budget {
            return len;
        }
        // cost(lo) <= budget < cost(hi); cost never falls as p grows.
        let (mut lo, mut hi) = (0, len);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if cost(mid) <= budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn budget(&self) -> u64 {
        self.space_limit
            .map_or(u64::MAX, |limit| limit.saturating_sub(self.used))
    }

    fn write(
        &mut self,
        id: NodeId,
        path: &str,
        writable: bool,
        buf: &[u8],
        offset: u64,
    ) -> io::Result<()> {
        self.check_on()?;
        if !writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{path} is open for reading only"),
            ));
        }
        if buf.is_empty() {
            // Like `FileExt::write_all_at`: nothing to write, no system call.
            return Ok(());
        }
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > MAX_FILE_LEN) {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("write {path} @{offset} +{len}: beyond the simulated disk's largest file"),
            ));
        }
        self.stats.writes += 1;
        let what = format!("write {path} @{offset} +{len}");
        let (mut n, mut error) = match self.take_fault(FaultOp::Write) {
            None => (len, None),
            Some(Fault::ShortWrite) => {
                let n = if len == 0 { 0 } else { self.rng.u64(0..len) };
                (
                    n,
                    Some(self.fault_error(
                        FaultOp::Write,
                        Fault::ShortWrite,
                        &format!("{what} wrote {n}"),
                    )),
                )
            }
            Some(fault) => (0, Some(self.fault_error(FaultOp::Write, fault, &what))),
        };
        let fit = self.fit(id, offset, n, self.budget());
        if fit < n {
            n = fit;
            if error.is_none() {
                error = Some(self.fault_error(
                    FaultOp::Write,
                    Fault::NoSpace,
                    &format!("{what} wrote {n}"),
                ));
            }
        }
        if n > 0 {
            let bytes = buf[..n as usize].to_vec();
            let before = self.contribution(id);
            let f = self.file_mut(id);
            f.visible.write(offset, &bytes);
            f.pending.push(FileOp::Write {
                offset,
                bytes,
                doomed: false,
            });
            self.account(id, before);
            self.stats.write_bytes += n;
            *self
                .stats
                .write_bytes_per_file
                .entry(path.to_string())
                .or_default() += n;
        }
        if error.is_none() {
            self.note(what);
        }
        error.map_or(Ok(()), Err)
    }

    fn set_len(&mut self, id: NodeId, path: &str, writable: bool, len: u64) -> io::Result<()> {
        self.check_on()?;
        if !writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{path} is open for reading only"),
            ));
        }
        if len > MAX_FILE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("set_len {path} {len}: beyond the simulated disk's largest file"),
            ));
        }
        let what = format!("set_len {path} {len}");
        let old = self.file(id).visible.len();
        if len > old {
            self.fail(FaultOp::Write, &what)?;
            if len - old > self.budget() {
                return Err(self.fault_error(FaultOp::Write, Fault::NoSpace, &what));
            }
        }
        let before = self.contribution(id);
        let f = self.file_mut(id);
        f.visible.set_len(len);
        f.pending.push(FileOp::SetLen { len, doomed: false });
        self.account(id, before);
        self.note(what);
        Ok(())
    }

    fn sync_file(&mut self, id: NodeId, path: &str) -> io::Result<()> {
        self.check_on()?;
        self.stats.syncs += 1;
        let what = format!("sync {path}");
        if let Some(fault) = self.take_fault(FaultOp::Sync) {
            let f = self.file_mut(id);
            f.diverged = true;
            for op in &mut f.pending {
                op.doom();
            }
            return Err(self.fault_error(
                FaultOp::Sync,
                fault,
                &format!("{what} (its unsynced writes are doomed)"),
            ));
        }
        let f = self.file_mut(id);
        let pending = std::mem::take(&mut f.pending);
        for op in &pending {
            if !op.doomed() {
                op.apply(&mut f.durable);
            }
        }
        self.note(what);
        Ok(())
    }

    /// A writeback hint: traced, and nothing else. It makes nothing durable:
    /// a power cut after it may still lose every byte it named.
    fn writeback(&mut self, path: &str, offset: u64, len: u64) -> io::Result<()> {
        self.check_on()?;
        self.note(format!("writeback {path} @{offset} +{len}"));
        Ok(())
    }

    fn punch(
        &mut self,
        id: NodeId,
        path: &str,
        writable: bool,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.check_on()?;
        if !writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{path} is open for reading only"),
            ));
        }
        if len == 0 || offset.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("punch {path} @{offset} +{len}: an empty or overflowing range"),
            ));
        }
        if self.punch_unsupported {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the simulated file system cannot punch holes",
            ));
        }
        self.stats.punches += 1;
        let before = self.contribution(id);
        let f = self.file_mut(id);
        f.visible.punch(offset, len);
        f.durable.punch(offset, len);
        f.pending.push(FileOp::Punch { offset, len });
        self.account(id, before);
        self.note(format!("punch {path} @{offset} +{len}"));
        Ok(())
    }

    // ---- power cut ----

    /// The disk a power cut now leaves (all unsynced work kept if `keep_all`).
    fn cut(&mut self, keep_all: bool) -> Disk {
        let mut nodes = BTreeMap::new();
        let mut nlinks: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut seen = BTreeSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(dir_id) = stack.pop() {
            let Some(Node::Dir(d)) = self.nodes.get(&dir_id) else {
                continue;
            };
            let mut map = d.durable.clone();
            for op in &d.pending {
                if keep_all || self.rng.bool() {
                    op.apply(&mut map);
                } else {
                    self.stats.lost_entries += 1;
                }
            }
            map.retain(|_, id| self.nodes.contains_key(id));
            for &child in map.values() {
                *nlinks.entry(child).or_insert(0) += 1;
                if !seen.insert(child) {
                    continue;
                }
                match self.nodes.get(&child) {
                    Some(Node::File(f)) => {
                        let image = file_image(f, &mut self.rng, &mut self.stats, keep_all);
                        nodes.insert(
                            child,
                            Node::File(FileNode {
                                visible: image.clone(),
                                durable: image,
                                ..FileNode::default()
                            }),
                        );
                    }
                    Some(Node::Dir(_)) => stack.push(child),
                    None => {}
                }
            }
            nodes.insert(
                dir_id,
                Node::Dir(DirNode {
                    visible: map.clone(),
                    durable: map,
                    ..DirNode::default()
                }),
            );
        }
        for (id, n) in nlinks {
            if let Some(Node::File(f)) = nodes.get_mut(&id) {
                f.nlink = n;
            }
        }
        self.stats.crashes += 1;
        let kind = if keep_all { "crash-keep-all" } else { "crash" };
        self.note(format!("{kind} (power cut #{})", self.stats.crashes));
        let mut disk = Disk::new(fastrand::Rng::with_seed(self.rng.u64(..)));
        disk.nodes = nodes;
        disk.next_id = self.next_id;
        disk.stats = self.stats.clone();
        disk.trace = self.trace.clone();
        disk.used = disk.recount_used();
        self.off = true;
        disk
    }

    fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut at = ROOT;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            match self.nodes.get(&at) {
                Some(Node::Dir(d)) => at = *d.visible.get(name)?,
                _ => return None,
            }
        }
        Some(at)
    }

    fn lookup_file(&self, path: &str) -> Option<NodeId> {
        self.lookup(path)
            .filter(|id| matches!(self.nodes.get(id), Some(Node::File(_))))
    }
}

/// The image a power cut leaves of file `f`.
fn file_image(
    f: &FileNode,
    rng: &mut fastrand::Rng,
    stats: &mut SimStats,
    keep_all: bool,
) -> Image {
    let mut image = f.durable.clone();
    for op in &f.pending {
        match op {
            FileOp::Write { doomed: true, .. } => stats.lost_writes += 1,
            FileOp::SetLen { doomed: true, .. } => {}
            FileOp::Write { offset, bytes, .. } if !keep_all => match rng.u32(0..10) {
                0..=3 => op.apply(&mut image),
                4..=6 => stats.lost_writes += 1,
                _ => {
                    stats.torn_writes += 1;
                    let end = offset + bytes.len() as u64;
                    let mut start = *offset;
                    while start < end {
                        let stop = ((start / SECTOR + 1) * SECTOR).min(end);
                        if rng.bool() {
                            let from = (start - offset) as usize;
                            image.write(start, &bytes[from..from + (stop - start) as usize]);
                        }
                        start = stop;
                    }
                }
            },
            FileOp::SetLen { .. } if !keep_all => {
                if rng.bool() {
                    op.apply(&mut image);
                }
            }
            _ => op.apply(&mut image),
        }
    }
    image
}

impl SimDisk {
    /// An empty disk whose every random choice comes from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::from_disk(Disk::new(fastrand::Rng::with_seed(seed)))
    }

    fn from_disk(disk: Disk) -> SimDisk {
        SimDisk {
            inner: Arc::new(Mutex::new(disk)),
        }
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.inner)
    }

    /// The root directory, as a backend.
    pub fn root(&self) -> Arc<dyn Backend> {
        Arc::new(SimDir {
            disk: self.inner.clone(),
            node: ROOT,
            path: String::new(),
        })
    }

    /// Cuts the power now: returns a new disk holding an image a real disk
    /// could be left with (see the module doc), randomised from this disk's
    /// rng. From then on every operation on this disk, through any of its
    /// handles, fails with "simulated power cut: this disk is off". The new
    /// disk has no faults, no locks and no open handles, the stats carried
    /// over (`crashes` counted) and an rng drawn from this one.
    pub fn crash(&self) -> SimDisk {
        SimDisk::from_disk(self.disk().cut(false))
    }

    /// Like [`SimDisk::crash`], but every unsynced write, length change and
    /// directory entry survives whole: a clean shutdown's image. Writes
    /// doomed by a failed sync stay lost.
    pub fn crash_keep_all(&self) -> SimDisk {
        SimDisk::from_disk(self.disk().cut(true))
    }

    /// Whether the power of this disk was cut.
    pub fn is_off(&self) -> bool {
        self.disk().off
    }

    /// Makes the `nth` (0 = the very next) operation of kind `op` from now
    /// fail with `fault`. Several may be scheduled.
    pub fn fail_op(&self, op: FaultOp, nth: u64, fault: Fault) {
        let mut disk = self.disk();
        disk.scheduled.push(Scheduled {
            op,
            remaining: nth,
            fault,
        });
    }

    /// Makes each operation of kind `op` fail with probability
    /// `per_million / 1e6`: EIO, or for writes a short write half the time.
    pub fn set_fault_rate(&self, op: FaultOp, per_million: u32) {
        self.disk().rates[op.index()] = per_million.min(1_000_000);
    }

    /// Clears scheduled faults, fault rates, the space limit and
    /// [`SimDisk::set_punch_unsupported`].
    pub fn clear_faults(&self) {
        let mut disk = self.disk();
        disk.scheduled.clear();
        disk.rates = [0; 7];
        disk.space_limit = None;
        disk.punch_unsupported = false;
    }

    /// Makes `punch_hole` fail with `ErrorKind::Unsupported` (a file system
    /// without hole punching), until [`SimDisk::clear_faults`] or a crash.
    pub fn set_punch_unsupported(&self, unsupported: bool) {
        self.disk().punch_unsupported = unsupported;
    }

    /// Limits the bytes allocated by all files (see the module doc); `None`
    /// is unlimited, the default.
    pub fn set_space_limit(&self, bytes: Option<u64>) {
        self.disk().space_limit = bytes;
    }

    /// Bytes allocated now by the files linked in a directory or open.
    pub fn used_bytes(&self) -> u64 {
        self.disk().used
    }

    pub fn stats(&self) -> SimStats {
        self.disk().stats.clone()
    }

    /// The last operations (up to 10 000), oldest first, for failure
    /// messages. Reads are traced only when a fault hits them.
    pub fn trace(&self) -> Vec<String> {
        self.disk().trace.iter().cloned().collect()
    }

    /// The visible contents of the file at `path` ('/'-separated from the
    /// root), if there is one.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let disk = self.disk();
        let id = disk.lookup_file(path)?;
        Some(disk.file(id).visible.bytes.clone())
    }

    /// The durable contents (what is on the platters) of the file at `path`.
    pub fn durable(&self, path: &str) -> Option<Vec<u8>> {
        let disk = self.disk();
        let id = disk.lookup_file(path)?;
        Some(disk.file(id).durable.bytes.clone())
    }

    /// Every visible file's path, sorted.
    pub fn paths(&self) -> Vec<String> {
        let disk = self.disk();
        let mut out = Vec::new();
        let mut stack = vec![(ROOT, String::new())];
        while let Some((id, path)) = stack.pop() {
            if let Some(Node::Dir(d)) = disk.nodes.get(&id) {
                for (name, &child) in &d.visible {
                    let child_path = join(&path, name);
                    if disk.is_dir(child) {
                        stack.push((child, child_path));
                    } else {
                        out.push(child_path);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Bit rot: flips bit `bit` (0..8) of byte `offset` of the file at
    /// `path` in the visible and the durable copy (each where it is long
    /// enough; unsynced writes pending over it are unchanged).
    ///
    /// # Panics
    /// If there is no file at `path` (a bug of the test).
    pub fn flip_bit(&self, path: &str, offset: u64, bit: u8) {
        let mut disk = self.disk();
        let Some(id) = disk.lookup_file(path) else {
            panic!("SimDisk::flip_bit: no file {path:?}");
        };
        let f = disk.file_mut(id);
        f.diverged = true;
        for image in [&mut f.visible, &mut f.durable] {
            if let Some(byte) = image.bytes.get_mut(offset as usize) {
                *byte ^= 1 << (bit % 8);
            }
        }
        disk.note(format!("DAMAGE flip {path} @{offset} bit {bit}"));
    }

    /// Damage: cuts the visible and the durable copy of the file at `path`
    /// to at most `len` bytes.
    ///
    /// # Panics
    /// If there is no file at `path` (a bug of the test).
    pub fn truncate_to(&self, path: &str, len: u64) {
        let mut disk = self.disk();
        let Some(id) = disk.lookup_file(path) else {
            panic!("SimDisk::truncate_to: no file {path:?}");
        };
        let before = disk.contribution(id);
        let f = disk.file_mut(id);
        f.diverged = true;
        for image in [&mut f.visible, &mut f.durable] {
            if image.len() > len {
                image.set_len(len);
            }
        }
        disk.account(id, before);
        disk.note(format!("DAMAGE truncate {path} to {len}"));
    }

    /// Checks the simulation's own bookkeeping (for tests of the sim).
    pub fn check_invariants(&self) -> Result<(), String> {
        let disk = self.disk();
        let recount = disk.recount_used();
        if recount != disk.used {
            return Err(format!(
                "used {} but the files allocate {recount}",
                disk.used
            ));
        }
        let mut nlinks: BTreeMap<NodeId, u32> = BTreeMap::new();
        for node in disk.nodes.values() {
            if let Node::Dir(d) = node {
                for &id in d.visible.values() {
                    *nlinks.entry(id).or_insert(0) += 1;
                }
            }
        }
        for (&id, node) in &disk.nodes {
            if let Node::File(f) = node {
                let n = nlinks.get(&id).copied().unwrap_or(0);
                if f.nlink != n {
                    return Err(format!("node {id} counts {} links but has {n}", f.nlink));
                }
                if f.visible
                    .holes
                    .0
                    .last()
                    .is_some_and(|h| h.1 > f.visible.len())
                {
                    return Err(format!("node {id} has a hole past its end"));
                }
                if !f.diverged {
                    let mut replay = f.durable.clone();
                    for op in &f.pending {
                        op.apply(&mut replay);
                    }
                    if replay != f.visible {
                        return Err(format!("node {id}: durable plus pending is not visible"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A directory of a [`SimDisk`].
struct SimDir {
    disk: Arc<Mutex<Disk>>,
    node: NodeId,
    path: String,
}

impl Backend for SimDir {
    fn dir(&self, name: &str, create: bool) -> io::Result<(Arc<dyn Backend>, bool)> {
        let (node, created) = lock(&self.disk).dir(self.node, &self.path, name, create)?;
        let dir = SimDir {
            disk: self.disk.clone(),
            node,
            path: join(&self.path, name),
        };
        Ok((Arc::new(dir), created))
    }

    fn list(&self) -> io::Result<Vec<Entry>> {
        lock(&self.disk).list(self.node, &self.path)
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>> {
        let node = lock(&self.disk).open(self.node, &self.path, name, mode)?;
        Ok(Arc::new(SimFile {
            disk: self.disk.clone(),
            node,
            path: join(&self.path, name),
            writable: mode.writes(),
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.disk).remove(self.node, &self.path, name)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        lock(&self.disk).rename(self.node, &self.path, from, to)
    }

    fn sync(&self) -> io::Result<()> {
        lock(&self.disk).sync_dir(self.node, &self.path)
    }

    fn lock(&self, name: &str) -> io::Result<LockGuard> {
        lock(&self.disk).lock_name(self.node, &self.path, name)?;
        Ok(Box::new(SimLock {
            disk: self.disk.clone(),
            key: (self.node, name.to_string()),
        }) as Box<dyn Any + Send + Sync>)
    }
}

/// A lock taken with [`Backend::lock`] on a [`SimDisk`].
struct SimLock {
    disk: Arc<Mutex<Disk>>,
    key: (NodeId, String),
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut disk = lock(&self.disk);
        disk.locks.remove(&self.key);
        if !disk.off {
            let line = format!("unlock {}", self.key.1);
            disk.note(line);
        }
    }
}

/// An open file of a [`SimDisk`]: names the node, not the entry.
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    node: NodeId,
    path: String,
    writable: bool,
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut disk = lock(&self.disk);
        let before = disk.contribution(self.node);
        if let Some(Node::File(f)) = disk.nodes.get_mut(&self.node) {
            f.handles = f.handles.saturating_sub(1);
        }
        disk.account(self.node, before);
    }
}

impl BackendFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        lock(&self.disk).len(self.node, &self.path)
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        lock(&self.disk).allocated(self.node)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        lock(&self.disk).read(self.node, &self.path, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        lock(&self.disk).write(self.node, &self.path, self.writable, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.disk).set_len(self.node, &self.path, self.writable, len)
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        lock(&self.disk).writeback(&self.path, offset, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        lock(&self.disk).sync_file(self.node, &self.path)
    }

    fn sync_all(&self) -> io::Result<()> {
        lock(&self.disk).sync_file(self.node, &self.path)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        lock(&self.disk).punch(self.node, &self.path, self.writable, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: u64 = 200;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0; len];
        fastrand::Rng::with_seed(seed).fill(&mut out);
        out
    }

    fn read_all(file: &dyn BackendFile) -> Vec<u8> {
        let mut buf = vec![0; file.len().unwrap() as usize];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    /// A synced file in a synced subdirectory of a synced root.
    fn synced_file(
        disk: &SimDisk,
        path_dir: &str,
        name: &str,
        content: &[u8],
    ) -> Arc<dyn BackendFile> {
        let root = disk.root();
        let (dir, _) = root.dir(path_dir, true).unwrap();
        let file = dir.open(name, OpenMode::CreateNew).unwrap();
        file.write_all_at(content, 0).unwrap();
        file.sync_data().unwrap();
        dir.sync().unwrap();
        root.sync().unwrap();
        file
    }

    #[test]
    fn synced_bytes_always_survive_a_cut() {
        // Goal: bytes and entries made durable survive every power cut, whatever follows them unsynced.
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let synced = bytes(3000 + seed as usize, seed);
            let file = synced_file(&disk, "tenants", "meta.log", &synced);
            file.write_all_at(&bytes(700, seed + 1), synced.len() as u64)
                .unwrap();
            file.write_all_at(&bytes(5000, seed + 2), synced.len() as u64 + 900)
                .unwrap();
            let other = disk.root().open("other", OpenMode::CreateNew).unwrap();
            other.write_all_at(b"x", 0).unwrap();
            let after = disk.crash();
            let image = after
                .read("tenants/meta.log")
                .expect("a synced file survives");
            assert!(image.len() >= synced.len(), "seed {seed}");
            assert_eq!(&image[..synced.len()], &synced[..], "seed {seed}");
            after.check_invariants().unwrap();
        }
    }

    #[test]
    fn unsynced_write_is_kept_lost_or_torn_at_sector_boundaries() {
        // Goal: an unsynced overwrite survives whole, not at all, or as a set of whole 512-byte sectors.
        let old = vec![0x11u8; 8192];
        let new = vec![0x22u8; 4096];
        let (start, end) = (100usize, 4196usize);
        let (mut kept, mut lost, mut torn) = (0, 0, 0);
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let file = synced_file(&disk, "d", "f", &old);
            file.write_all_at(&new, start as u64).unwrap();
            let image = disk.crash().read("d/f").unwrap();
            assert_eq!(image.len(), old.len(), "seed {seed}");
            assert!(image[..start]
                .iter()
                .chain(&image[end..])
                .all(|&b| b == 0x11));
            let mut sectors = Vec::new();
            let mut s = start;
            while s < end {
                let e = ((s / 512 + 1) * 512).min(end);
                let piece = &image[s..e];
                let all_new = piece.iter().all(|&b| b == 0x22);
                let all_old = piece.iter().all(|&b| b == 0x11);
                assert!(all_new || all_old, "seed {seed}: sector at {s} is a mix");
                sectors.push(all_new);
                s = e;
            }
            match (sectors.iter().all(|&k| k), sectors.iter().all(|&k| !k)) {
                (true, _) => kept += 1,
                (_, true) => lost += 1,
                _ => torn += 1,
            }
        }
        assert!(
            kept > 0 && lost > 0 && torn > 0,
            "kept {kept} lost {lost} torn {torn}"
        );
    }

    #[test]
    fn unsynced_append_extends_only_with_kept_sectors() {
        // Goal: an unsynced append past the end leaves the synced prefix, then zeros or its own bytes.
        let mut lengths = BTreeSet::new();
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let file = synced_file(&disk, "d", "f", &[7u8; 1000]);
            let tail = vec![9u8; 2000];
            file.write_all_at(&tail, 1000).unwrap();
            let image = disk.crash().read("d/f").unwrap();
            lengths.insert(image.len());
            // Lost, or ending at a sector boundary of a kept sector, or whole.
            assert!(
                [1000, 1024, 1536, 2048, 2560, 3000].contains(&image.len()),
                "seed {seed}: {}",
                image.len()
            );
            assert!(image[..1000].iter().all(|&b| b == 7));
            assert!(image[1000..].iter().all(|&b| b == 9 || b == 0));
        }
        assert!(
            lengths.contains(&1000) && lengths.contains(&3000) && lengths.len() > 2,
            "{lengths:?}"
        );
    }

    #[test]
    fn created_file_needs_a_directory_sync() {
        // Goal: a new entry survives a cut only sometimes until its directory is synced, then always.
        let (mut vanished, mut survived) = (0, 0);
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let file = disk.root().open("new", OpenMode::CreateNew).unwrap();
            file.write_all_at(b"hello", 0).unwrap();
            file.sync_all().unwrap();
            match disk.crash().read("new") {
                None => vanished += 1,
                Some(content) => {
                    assert_eq!(content, b"hello");
                    survived += 1;
                }
            }
            let disk = SimDisk::new(seed);
            let root = disk.root();
            let (dir, created) = root.dir("sub", true).unwrap();
            assert!(created);
            let file = dir.open("new", OpenMode::CreateNew).unwrap();
            file.write_all_at(b"hello", 0).unwrap();
            file.sync_all().unwrap();
            dir.sync().unwrap();
            root.sync().unwrap();
            assert_eq!(
                disk.crash().read("sub/new").unwrap(),
                b"hello",
                "seed {seed}"
            );
        }
        assert!(
            vanished > 0 && survived > 0,
            "vanished {vanished} survived {survived}"
        );
    }

    #[test]
    fn subdirectory_entry_needs_its_parent_synced() {
        // Goal: a synced file in a new directory is lost with the directory when the parent was never synced.
        let mut gone = 0;
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let (dir, _) = disk.root().dir("sub", true).unwrap();
            let file = dir.open("f", OpenMode::CreateNew).unwrap();
            file.write_all_at(b"x", 0).unwrap();
            file.sync_all().unwrap();
            dir.sync().unwrap();
            if disk.crash().read("sub/f").is_none() {
                gone += 1;
            }
        }
        assert!(gone > 0);
    }

    #[test]
    fn rename_is_atomic() {
        // Goal: after a cut, a rename's target holds the whole old file or the whole new one, never a mix.
        let (mut old_seen, mut new_seen) = (0, 0);
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let old = bytes(2000, seed);
            let new = bytes(3000, seed + 1000);
            let _ = synced_file(&disk, "t", "meta.log", &old);
            let (dir, _) = disk.root().dir("t", false).unwrap();
            let tmp = dir.open("meta.tmp", OpenMode::Truncate).unwrap();
            tmp.write_all_at(&new, 0).unwrap();
            tmp.sync_all().unwrap();
            dir.rename("meta.tmp", "meta.log").unwrap();
            assert_eq!(disk.read("t/meta.log").unwrap(), new);
            let image = disk
                .crash()
                .read("t/meta.log")
                .expect("the target always exists");
            if image == old {
                old_seen += 1;
            } else {
                assert_eq!(image, new, "seed {seed}");
                new_seen += 1;
            }
        }
        assert!(
            old_seen > 0 && new_seen > 0,
            "old {old_seen} new {new_seen}"
        );
    }

    #[test]
    fn failed_sync_dooms_its_writes() {
        // Goal: writes a failed sync should have made durable stay lost after a later successful sync and a cut.
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let first = bytes(1000, seed);
            let file = synced_file(&disk, "d", "f", &first);
            let doomed = vec![0xEEu8; 1000];
            file.write_all_at(&doomed, 1000).unwrap();
            disk.fail_op(FaultOp::Sync, 0, Fault::Eio);
            let e = file.sync_data().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO));
            assert_eq!(
                &read_all(&*file)[1000..],
                &doomed[..],
                "visible still shows them"
            );
            let later = vec![0x55u8; 500];
            file.write_all_at(&later, 2000).unwrap();
            file.sync_data().unwrap();
            assert_eq!(disk.stats().faults.get("eio-sync"), Some(&1));
            let after = if seed % 2 == 0 {
                disk.crash()
            } else {
                disk.crash_keep_all()
            };
            let image = after.read("d/f").unwrap();
            assert_eq!(image.len(), 2500, "seed {seed}");
            assert_eq!(&image[..1000], &first[..]);
            assert!(
                image[1000..2000].iter().all(|&b| b == 0),
                "seed {seed}: a doomed write came back"
            );
            assert_eq!(&image[2000..], &later[..]);
        }
    }

    #[test]
    fn no_space_short_write_and_accounting() {
        // Goal: beyond the space limit a write writes what fits and fails StorageFull; used_bytes follows every change.
        let disk = SimDisk::new(1);
        let root = disk.root();
        disk.set_space_limit(Some(1000));
        let file = root.open("a", OpenMode::CreateNew).unwrap();
        file.write_all_at(&[1; 600], 0).unwrap();
        assert_eq!(disk.used_bytes(), 600);
        let e = file.write_all_at(&[2; 600], 600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(super::super::is_no_space(&e));
        assert_eq!(file.len().unwrap(), 1000);
        assert_eq!(disk.used_bytes(), 1000);
        assert_eq!(disk.stats().faults.get("no-space"), Some(&1));
        file.write_all_at(&[3; 1000], 0).unwrap();
        assert_eq!(
            file.set_len(1001).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert_eq!(file.len().unwrap(), 1000);
        file.set_len(400).unwrap();
        assert_eq!(disk.used_bytes(), 400);
        // An unlinked file keeps its space while open, frees it when closed.
        root.remove("a").unwrap();
        assert_eq!(disk.used_bytes(), 400);
        file.write_all_at(&[4; 100], 400).unwrap();
        assert_eq!(disk.used_bytes(), 500);
        drop(file);
        assert_eq!(disk.used_bytes(), 0);
        disk.check_invariants().unwrap();
        disk.clear_faults();
        let big = root.open("b", OpenMode::CreateNew).unwrap();
        big.write_all_at(&[5; 5000], 0).unwrap();
        assert_eq!(disk.used_bytes(), 5000);
    }

    #[test]
    fn punch_hole_frees_space_and_reads_zeros() {
        // Goal: a punched range reads zeros, keeps the length, frees its space, and stays zero through a cut.
        for seed in 0..20 {
            let disk = SimDisk::new(seed);
            let content = vec![0xABu8; 4096];
            let file = synced_file(&disk, "seg", "1.seg", &content);
            assert_eq!(disk.used_bytes(), 4096);
            file.punch_hole(1024, 2048).unwrap();
            assert_eq!(disk.used_bytes(), 2048);
            let now = read_all(&*file);
            assert_eq!(now.len(), 4096);
            assert!(now[1024..3072].iter().all(|&b| b == 0));
            assert!(now[..1024].iter().chain(&now[3072..]).all(|&b| b == 0xAB));
            assert_eq!(
                disk.durable("seg/1.seg").unwrap(),
                now,
                "punching is durable at once"
            );
            file.punch_hole(4000, 10_000).unwrap();
            assert_eq!(file.len().unwrap(), 4096);
            assert_eq!(disk.used_bytes(), 2048 - 96);
            file.write_all_at(&[1; 100], 1100).unwrap();
            assert_eq!(disk.used_bytes(), 2048 - 96 + 100);
            assert_eq!(
                file.punch_hole(0, 0).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            disk.check_invariants().unwrap();
            let after = disk.crash();
            let image = after.read("seg/1.seg").unwrap();
            assert!(image[1024..1100]
                .iter()
                .chain(&image[1200..3072])
                .all(|&b| b == 0));
            after.check_invariants().unwrap();
        }
    }

    #[test]
    fn old_disk_refuses_everything_after_a_crash() {
        // Goal: once cut, the old disk and every handle on it fail, so a store still running can change nothing.
        let disk = SimDisk::new(3);
        let root = disk.root();
        let (dir, _) = root.dir("d", true).unwrap();
        let file = dir.open("f", OpenMode::CreateNew).unwrap();
        file.write_all_at(b"abc", 0).unwrap();
        let guard = root.lock("LOCK").unwrap();
        let after = disk.crash_keep_all();
        let is_off = |e: io::Error| {
            e.to_string()
                .contains("simulated power cut: this disk is off")
        };
        assert!(is_off(file.write_all_at(b"x", 0).unwrap_err()));
        assert!(is_off(file.read_exact_at(&mut [0; 1], 0).unwrap_err()));
        assert!(is_off(file.len().unwrap_err()));
        assert!(is_off(file.set_len(0).unwrap_err()));
        assert!(is_off(file.sync_data().unwrap_err()));
        assert!(is_off(file.sync_all().unwrap_err()));
        assert!(is_off(file.punch_hole(0, 1).unwrap_err()));
        assert!(is_off(dir.open("f", OpenMode::Read).err().unwrap()));
        assert!(is_off(dir.dir("x", true).err().unwrap()));
        assert!(is_off(dir.list().unwrap_err()));
        assert!(is_off(dir.remove("f").unwrap_err()));
        assert!(is_off(dir.rename("f", "g").unwrap_err()));
        assert!(is_off(dir.sync().unwrap_err()));
        assert!(is_off(root.lock("OTHER").err().unwrap()));
        assert!(is_off(disk.root().list().unwrap_err()));
        assert!(disk.is_off() && !after.is_off());
        drop(guard);
        drop(file);
        assert_eq!(after.read("d/f").unwrap(), b"abc");
        // The new disk has no locks: the lock is free again.
        let _again = after.root().lock("LOCK").unwrap();
        assert_eq!(after.stats().crashes, 1);
    }

    #[test]
    fn scheduled_faults_hit_exactly_the_nth_op() {
        // Goal: fail_op counts operations of its kind from when it is scheduled and hits only the nth.
        let disk = SimDisk::new(4);
        let root = disk.root();
        let file = root.open("f", OpenMode::CreateNew).unwrap();
        disk.fail_op(FaultOp::Write, 2, Fault::Eio);
        file.write_all_at(b"aa", 0).unwrap();
        file.read_exact_at(&mut [0; 1], 0).unwrap();
        file.write_all_at(b"bb", 2).unwrap();
        assert_eq!(
            file.write_all_at(b"cc", 4).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        file.write_all_at(b"dd", 4).unwrap();
        assert_eq!(disk.read("f").unwrap(), b"aabbdd");
        let trace = disk.trace();
        assert!(trace.contains(&"write f @2 +2".to_string()), "{trace:?}");
        assert!(
            trace.contains(&"FAULT eio-write: write f @4 +2".to_string()),
            "{trace:?}"
        );
        // An empty write touches nothing and counts as no operation.
        disk.fail_op(FaultOp::Write, 0, Fault::Eio);
        file.write_all_at(&[], 100).unwrap();
        assert!(file.write_all_at(b"", 100).is_ok() && file.write_all_at(b"d", 5).is_err());
        // A short write leaves a strict prefix.
        disk.fail_op(FaultOp::Write, 0, Fault::ShortWrite);
        assert!(file.write_all_at(&[9; 1000], 6).is_err());
        let len = file.len().unwrap();
        assert!((6..1006).contains(&len), "{len}");
        assert!(read_all(&*file)[6..].iter().all(|&b| b == 9));
        disk.fail_op(FaultOp::Write, 0, Fault::NoSpace);
        assert_eq!(
            file.write_all_at(b"z", 0).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        // Failed rename, remove, open and dir sync change nothing.
        root.open("g", OpenMode::CreateNew).unwrap();
        disk.fail_op(FaultOp::Rename, 0, Fault::Eio);
        assert!(root.rename("g", "f").is_err());
        disk.fail_op(FaultOp::Remove, 1, Fault::Eio);
        root.open("h", OpenMode::CreateNew).unwrap();
        root.remove("h").unwrap();
        assert!(root.remove("g").is_err());
        disk.fail_op(FaultOp::Open, 0, Fault::Eio);
        assert!(root.open("new", OpenMode::CreateNew).is_err());
        disk.fail_op(FaultOp::Open, 0, Fault::Eio);
        assert!(root.dir("newdir", true).is_err());
        assert_eq!(disk.paths(), vec!["f".to_string(), "g".to_string()]);
        disk.fail_op(FaultOp::Read, 1, Fault::Eio);
        file.len().unwrap();
        assert!(file.read_exact_at(&mut [0; 1], 0).is_err());
        disk.fail_op(FaultOp::DirSync, 0, Fault::Eio);
        assert!(root.sync().is_err());
        root.sync().unwrap();
        let faults = disk.stats().faults;
        for key in [
            "eio-write",
            "short-write",
            "no-space",
            "eio-rename",
            "eio-remove",
            "eio-open",
            "eio-read",
            "eio-dir-sync",
        ] {
            assert!(faults.contains_key(key), "{key} in {faults:?}");
        }
        assert_eq!(faults["eio-open"], 2);
        // A random rate of one in one hits every op.
        disk.set_fault_rate(FaultOp::Sync, 1_000_000);
        assert!(file.sync_data().is_err());
        disk.clear_faults();
        file.sync_data().unwrap();
        disk.check_invariants().unwrap();
    }

    #[test]
    fn lock_would_block_then_releases_on_drop() {
        // Goal: a held lock refuses a second holder with WouldBlock and frees on drop; it makes its lock file.
        let disk = SimDisk::new(5);
        let root = disk.root();
        let guard = root.lock("LOCK").unwrap();
        assert_eq!(
            root.lock("LOCK").err().unwrap().kind(),
            io::ErrorKind::WouldBlock
        );
        let (sub, _) = root.dir("t", true).unwrap();
        let _other = sub.lock("LOCK").unwrap();
        assert_eq!(disk.paths(), vec!["LOCK".to_string(), "t/LOCK".to_string()]);
        drop(guard);
        let _again = root.lock("LOCK").unwrap();
    }

    #[test]
    fn crash_keep_all_keeps_everything_visible() {
        // Goal: a clean-shutdown image holds exactly what was visible, unsynced writes and entries included.
        let disk = SimDisk::new(6);
        let root = disk.root();
        let (dir, _) = root.dir("a", true).unwrap();
        let f = dir.open("f", OpenMode::CreateNew).unwrap();
        f.write_all_at(&bytes(10_000, 1), 0).unwrap();
        f.set_len(7000).unwrap();
        f.write_all_at(b"tail", 8000).unwrap();
        let g = root.open("g", OpenMode::CreateNew).unwrap();
        g.write_all_at(b"gee", 0).unwrap();
        root.rename("g", "h").unwrap();
        let before: Vec<(String, Vec<u8>)> = disk
            .paths()
            .into_iter()
            .map(|p| (p.clone(), disk.read(&p).unwrap()))
            .collect();
        let after = disk.crash_keep_all();
        let now: Vec<(String, Vec<u8>)> = after
            .paths()
            .into_iter()
            .map(|p| (p.clone(), after.read(&p).unwrap()))
            .collect();
        assert_eq!(before, now);
        assert_eq!(after.used_bytes(), disk.used_bytes());
        after.check_invariants().unwrap();
    }

    #[test]
    fn open_handles_name_the_node_not_the_entry() {
        // Goal: a handle keeps reading and writing its file after remove or a rename over it.
        let disk = SimDisk::new(7);
        let root = disk.root();
        let a = root.open("a", OpenMode::CreateNew).unwrap();
        a.write_all_at(b"first", 0).unwrap();
        let b = root.open("b", OpenMode::CreateNew).unwrap();
        b.write_all_at(b"second", 0).unwrap();
        root.rename("b", "a").unwrap();
        a.write_all_at(b"FIRST", 0).unwrap();
        assert_eq!(read_all(&*a), b"FIRST");
        assert_eq!(disk.read("a").unwrap(), b"second");
        root.remove("a").unwrap();
        assert_eq!(read_all(&*b), b"second");
        assert_eq!(
            root.remove("a").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            root.open("a", OpenMode::Read).err().unwrap().kind(),
            io::ErrorKind::NotFound
        );
        let ro = root
            .open("c", OpenMode::CreateNew)
            .and_then(|_| root.open("c", OpenMode::Read))
            .unwrap();
        assert_eq!(
            ro.write_all_at(b"x", 0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            ro.read_exact_at(&mut [0; 1], 0).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            root.open("c", OpenMode::CreateNew).err().unwrap().kind(),
            io::ErrorKind::AlreadyExists
        );
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert_eq!(
                root.open(bad, OpenMode::CreateOrOpen).err().unwrap().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        root.dir("d", true).unwrap();
        assert_eq!(
            root.open("d", OpenMode::Read).err().unwrap().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            root.dir("missing", false).err().unwrap().kind(),
            io::ErrorKind::NotFound
        );
        let mut kinds: Vec<(String, EntryKind)> = root
            .list()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        kinds.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            kinds,
            vec![
                ("c".to_string(), EntryKind::File),
                ("d".to_string(), EntryKind::Dir)
            ]
        );
        root.remove("d").unwrap();
        disk.check_invariants().unwrap();
    }

    #[test]
    fn unsynced_truncate_may_or_may_not_survive() {
        // Goal: an unsynced Truncate-open leaves the old synced content in some seeds and an empty file in others.
        let (mut old, mut empty) = (0, 0);
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let _ = synced_file(&disk, "d", "f", b"synced content");
            let (dir, _) = disk.root().dir("d", false).unwrap();
            let f = dir.open("f", OpenMode::Truncate).unwrap();
            assert_eq!(f.len().unwrap(), 0);
            match disk.crash().read("d/f").unwrap().as_slice() {
                b"synced content" => old += 1,
                b"" => empty += 1,
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert!(old > 0 && empty > 0);
    }

    #[test]
    fn same_seed_same_image() {
        // Goal: the simulation is deterministic: the same calls from the same seed leave the same image.
        let run = |seed| {
            let disk = SimDisk::new(seed);
            let root = disk.root();
            for i in 0..20u64 {
                let f = root.open(&format!("f{i}"), OpenMode::CreateNew).unwrap();
                f.write_all_at(&bytes(3000, i), 0).unwrap();
                if i % 3 == 0 {
                    f.sync_data().unwrap();
                }
            }
            let after = disk.crash();
            let stats = after.stats();
            let files: Vec<_> = after
                .paths()
                .into_iter()
                .map(|p| (after.read(&p), p))
                .collect();
            (
                files,
                stats.torn_writes,
                stats.lost_writes,
                stats.lost_entries,
            )
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn random_call_sequences_never_panic_and_keep_the_books() {
        // Goal: any sequence of calls, faults and cuts leaves the sim's accounting consistent and never panics.
        for seed in 0..40 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut disk = SimDisk::new(seed);
            disk.set_fault_rate(FaultOp::Write, 50_000);
            disk.set_fault_rate(FaultOp::Sync, 50_000);
            disk.set_fault_rate(FaultOp::DirSync, 50_000);
            disk.set_fault_rate(FaultOp::Rename, 50_000);
            disk.set_fault_rate(FaultOp::Open, 20_000);
            disk.set_space_limit(Some(20_000));
            let names = ["a", "b", "c", "d", "..", ""];
            let mut dirs: Vec<Arc<dyn Backend>> = vec![disk.root()];
            let mut files: Vec<Arc<dyn BackendFile>> = Vec::new();
            for step in 0..600 {
                let name = names[rng.usize(..names.len())];
                let d = dirs[rng.usize(..dirs.len())].clone();
                match rng.u32(0..14) {
                    0 => {
                        if let Ok((sub, _)) = d.dir(name, rng.bool()) {
                            dirs.push(sub);
                        }
                    }
                    1 | 2 => {
                        let modes = [
                            OpenMode::Read,
                            OpenMode::Write,
                            OpenMode::CreateNew,
                            OpenMode::CreateOrOpen,
                            OpenMode::Truncate,
                        ];
                        if let Ok(f) = d.open(name, modes[rng.usize(..modes.len())]) {
                            files.push(f);
                        }
                    }
                    3 => {
                        let _ = d.remove(name);
                    }
                    4 => {
                        let _ = d.rename(name, names[rng.usize(..names.len())]);
                    }
                    5 => {
                        let _ = d.sync();
                    }
                    6 => {
                        let _ = d.list();
                    }
                    7 if !files.is_empty() => {
                        let f = &files[rng.usize(..files.len())];
                        let _ = f.write_all_at(&bytes(rng.usize(0..3000), step), rng.u64(0..6000));
                    }
                    8 if !files.is_empty() => {
                        let f = &files[rng.usize(..files.len())];
                        let _ = f.set_len(rng.u64(0..6000));
                        let _ = f.punch_hole(rng.u64(0..6000), rng.u64(0..3000));
                    }
                    9 if !files.is_empty() => {
                        let f = &files[rng.usize(..files.len())];
                        let _ = if rng.bool() {
                            f.sync_data()
                        } else {
                            f.sync_all()
                        };
                        let mut buf = vec![0; rng.usize(0..100)];
                        let _ = f.read_exact_at(&mut buf, rng.u64(0..6000));
                    }
                    10 if !files.is_empty() => {
                        files.swap_remove(rng.usize(..files.len()));
                    }
                    11 => {
                        let _ = d.lock(name);
                    }
                    12 if rng.u32(0..20) == 0 => {
                        disk = if rng.bool() {
                            disk.crash()
                        } else {
                            disk.crash_keep_all()
                        };
                        disk.check_invariants()
                            .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
                        dirs = vec![disk.root()];
                        files.clear();
                    }
                    _ => {}
                }
                if let Err(e) = disk.check_invariants() {
                    panic!("seed {seed} step {step}: {e}\n{}", disk.trace().join("\n"));
                }
            }
            files.clear();
            disk.check_invariants().unwrap();
            assert!(disk.trace().len() <= TRACE_LEN);
        }
    }

    #[test]
    fn holes_match_a_byte_map() {
        // Goal: the hole list (add, remove, clip, total, overlap) agrees with a byte-per-byte model.
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut holes = Holes::default();
            let mut model = [false; 300];
            for _ in 0..40 {
                let a = rng.u64(0..300);
                let b = rng.u64(a..=300);
                match rng.u32(0..3) {
                    0 => {
                        holes.add(a, b);
                        model[a as usize..b as usize].fill(true);
                    }
                    1 => {
                        holes.remove(a, b);
                        model[a as usize..b as usize].fill(false);
                    }
                    _ => {
                        holes.clip(a);
                        model[a as usize..].fill(false);
                    }
                }
                assert!(holes.0.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", holes.0);
                assert!(holes.0.iter().all(|h| h.0 < h.1));
                let total = model.iter().filter(|&&h| h).count() as u64;
                assert_eq!(holes.total(), total, "seed {seed}");
                let (x, y) = (rng.u64(0..300), rng.u64(0..=300));
                let inside = if x < y {
                    model[x as usize..y as usize].iter().filter(|&&h| h).count()
                } else {
                    0
                };
                assert_eq!(holes.overlap(x, y), inside as u64);
            }
        }
    }

    #[test]
    fn punch_unsupported_changes_nothing() {
        // Goal: a disk without hole punching refuses with Unsupported and keeps the bytes and their space.
        let disk = SimDisk::new(8);
        let file = disk.root().open("f", OpenMode::CreateNew).unwrap();
        file.write_all_at(&[1; 2000], 0).unwrap();
        disk.set_punch_unsupported(true);
        assert_eq!(
            file.punch_hole(0, 1000).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
        assert_eq!(disk.read("f").unwrap(), vec![1; 2000]);
        assert_eq!(disk.used_bytes(), 2000);
        disk.clear_faults();
        file.punch_hole(0, 1000).unwrap();
        assert_eq!(disk.used_bytes(), 1000);
    }

    #[test]
    fn rename_never_moves_an_older_file_into_its_target() {
        // Goal: when a name was reused before a rename, a cut never shows the older file under the target.
        let mut new_seen = 0;
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed);
            let _ = synced_file(&disk, "t", "hint.tmp", b"older file");
            let (dir, _) = disk.root().dir("t", false).unwrap();
            dir.remove("hint.tmp").unwrap();
            let tmp = dir.open("hint.tmp", OpenMode::CreateNew).unwrap();
            tmp.write_all_at(b"newer file", 0).unwrap();
            tmp.sync_all().unwrap();
            dir.rename("hint.tmp", "1.hint").unwrap();
            match disk.crash().read("t/1.hint") {
                None => {}
                Some(content) => {
                    assert_eq!(content, b"newer file", "seed {seed}");
                    new_seen += 1;
                }
            }
        }
        assert!(new_seen > 0);
    }
}
