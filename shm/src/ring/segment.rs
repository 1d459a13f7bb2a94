//! Creating, opening, validating, listing and removing ring segments in `/dev/shm`.
//!
//! This module owns the mapping and hands out typed references to the shared
//! structures; all raw-pointer work on segment memory lives here.

use super::error::{AttachError, CreateError};
use super::layout::*;
use super::liveness::ProcessId;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Folder holding ring segments; tmpfs on Linux.
pub const SHM_DIR: &str = "/dev/shm";
/// File-name prefix of ring segments: `/dev/shm/streamd-ring.NAME`.
pub const SEGMENT_PREFIX: &str = "streamd-ring.";

/// How long an attacher waits for a segment that another process is initialising.
const INIT_GRACE: Duration = Duration::from_secs(2);

/// True when `name` is a valid ring or group name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < NAME_CAPACITY
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Path of the segment for ring `name`.
pub fn segment_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{SEGMENT_PREFIX}{name}"))
}

pub(crate) fn name_bytes(name: &str) -> [u8; NAME_CAPACITY] {
    let mut out = [0u8; NAME_CAPACITY];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

pub(crate) fn name_from_bytes(bytes: &[u8; NAME_CAPACITY]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_CAPACITY);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A mapped ring segment.
pub(crate) struct Segment {
    name: String,
    path: PathBuf,
    file: File,
    map: MmapRaw,
    geometry: Geometry,
}

/// Parameters of a new ring.
#[derive(Debug, Clone)]
pub(crate) struct RingSpec {
    pub name: String,
    pub slots: u32,
    pub payload_bytes: u64,
    pub full_policy: u32,
}

/// What `Segment::create` found and removed under the same name, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSegment {
    pub path: PathBuf,
    pub producer_pid: u32,
}

/// Largest segment we agree to create.
const MAX_SEGMENT: u64 = 1 << 40;

impl Segment {
    /// Creates, sizes, allocates and initialises a segment; the caller becomes its producer.
    /// A segment of the same name whose producer is gone is removed first and reported.
    /// `populate` maps every page now: for a creator that writes the slots itself, so
    /// its first frames take no page faults. An owner that hands the slots to other
    /// processes leaves it out; each of them faults in its own mapping anyway.
    pub(crate) fn create(
        spec: &RingSpec,
        populate: bool,
    ) -> Result<(Segment, Option<StaleSegment>), CreateError> {
        if !valid_name(&spec.name) {
            return Err(CreateError::BadName(super::error::shown(&spec.name)));
        }
        if spec.slots == 0 {
            return Err(CreateError::NoSlots {
                name: spec.name.clone(),
            });
        }
        let geometry = Geometry::new(spec.slots, spec.payload_bytes)
            .filter(|g| g.segment_size <= MAX_SEGMENT)
            .ok_or_else(|| CreateError::BadSize {
                name: spec.name.clone(),
                slots: spec.slots,
                slot_bytes: spec.payload_bytes,
            })?;
        let path = segment_path(&spec.name);
        let mut stale = None;
        let file = loop {
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match opened {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && stale.is_none() => {
                    stale = Some(remove_if_stale(&spec.name, &path)?);
                }
                Err(e) => {
                    return Err(CreateError::Io {
                        op: "create",
                        path,
                        source: e,
                    })
                }
            }
        };
        let io_err = |op, source| CreateError::Io {
            op,
            path: path.clone(),
            source,
        };
        // The umask may have widened nothing, but say it explicitly: owner only.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("set permissions of", e))?;
        // Allocate tmpfs pages now so a full /dev/shm fails here with a clear error rather
        // than as SIGBUS on the first write into a hole.
        // SAFETY: the fd is open for writing; fallocate reads no memory of ours.
        let rc = unsafe {
            libc::fallocate(file.as_raw_fd(), 0, 0, geometry.segment_size as libc::off_t)
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            let _ = fs::remove_file(&path);
            return Err(match err.raw_os_error() {
                Some(libc::ENOSPC) => CreateError::NoSpace {
                    name: spec.name.clone(),
                    bytes: geometry.segment_size,
                },
                _ => io_err("allocate", err),
            });
        }
        let mut options = MmapOptions::new();
        options.len(geometry.segment_size as usize);
        if populate {
            options.populate();
        }
        let map = options.map_raw(&file).map_err(|e| {
            let _ = fs::remove_file(&path);
            io_err("map", e)
        })?;
        let huge = huge_pages_available() && map.advise(memmap2::Advice::HugePage).is_ok();
        let segment = Segment {
            name: spec.name.clone(),
            path,
            file,
            map,
            geometry,
        };
        segment.initialise(spec, huge);
        Ok((segment, stale.flatten()))
    }

    fn initialise(&self, spec: &RingSpec, huge: bool) {
        let g = &self.geometry;
        let me = ProcessId::current();
        let header = self.header();
        // Relaxed: nobody reads these words before the Release store of `version` below.
        header.magic.store(MAGIC, Relaxed);
        header.header_size.store(HEADER_SIZE as u32, Relaxed);
        header.segment_size.store(g.segment_size, Relaxed);
        header.slot_count.store(g.slot_count, Relaxed);
        header.max_consumers.store(MAX_CONSUMERS as u32, Relaxed);
        header.max_groups.store(MAX_GROUPS as u32, Relaxed);
        header
            .slot_header_size
            .store(SLOT_HEADER_SIZE as u32, Relaxed);
        header.slot_stride.store(g.slot_stride, Relaxed);
        header.payload_capacity.store(g.payload_capacity, Relaxed);
        header.consumers_offset.store(g.consumers_offset, Relaxed);
        header.groups_offset.store(g.groups_offset, Relaxed);
        header.slots_offset.store(g.slots_offset, Relaxed);
        header.full_policy.store(spec.full_policy, Relaxed);
        let flags = if huge { RING_FLAG_HUGE_PAGES } else { 0 };
        header.flags.store(flags, Relaxed);
        header.created_unix_ns.store(unix_ns(), Relaxed);
        for (cell, byte) in header.name.iter().zip(name_bytes(&spec.name)) {
            cell.store(byte, Relaxed);
        }
        header.producer_pid.store(me.pid, Relaxed);
        header.producer_start_time.store(me.start_time, Relaxed);
        header.producer_state.store(PRODUCER_RUNNING, Relaxed);
        // The rest of the segment is zero from fallocate: free entries, empty stamps.
        // SYNC: pairs with the Acquire load of `version` in `validate`; every word above
        // is visible to an attacher that reads this version.
        header.version.store(VERSION, Release);
    }

    /// Opens and validates an existing segment, waiting up to `wait` for it to appear.
    pub(crate) fn open(name: &str, wait: Duration) -> Result<Segment, AttachError> {
        if !valid_name(name) {
            return Err(AttachError::BadName(super::error::shown(name)));
        }
        let path = segment_path(name);
        let started = Instant::now();
        let file = loop {
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if started.elapsed() >= wait {
                        return Err(AttachError::NotFound {
                            name: name.into(),
                            path,
                            waited_s: wait.as_secs(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    let owner = fs::metadata(&path).map_or(u32::MAX, |m| m.uid());
                    return Err(AttachError::OwnedByOther {
                        name: name.into(),
                        path,
                        owner,
                        you: effective_uid(),
                    });
                }
                Err(e) => {
                    return Err(AttachError::Io {
                        op: "open",
                        path,
                        source: e,
                    })
                }
            }
        };
        Segment::open_file(name, path, file, INIT_GRACE.max(wait))
    }

    /// Validates an opened segment, waiting up to `grace` for its creator to finish
    /// initialising it (a large ring takes a while to allocate and fault in).
    fn open_file(
        name: &str,
        path: PathBuf,
        file: File,
        grace: Duration,
    ) -> Result<Segment, AttachError> {
        let io_err = |op, path: &Path, source| AttachError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let meta = file.metadata().map_err(|e| io_err("inspect", &path, e))?;
        if meta.uid() != effective_uid() {
            return Err(AttachError::OwnedByOther {
                name: name.into(),
                path,
                owner: meta.uid(),
                you: effective_uid(),
            });
        }
        let started = Instant::now();
        let mut initialising = false;
        loop {
            let len = file
                .metadata()
                .map_err(|e| io_err("inspect", &path, e))?
                .len();
            if len >= HEADER_SIZE as u64 {
                let map = MmapOptions::new()
                    .len(len as usize)
                    .map_raw(&file)
                    .map_err(|e| io_err("map", &path, e))?;
                match validate(name, &path, &map, len) {
                    Ok(geometry) => {
                        return Ok(Segment {
                            name: name.into(),
                            path,
                            file,
                            map,
                            geometry,
                        });
                    }
                    Err(Validation::Initialising) => initialising = true,
                    Err(Validation::Invalid(e)) => return Err(e),
                }
            }
            if started.elapsed() > grace {
                return Err(if len < HEADER_SIZE as u64 {
                    AttachError::Layout {
                        name: name.into(),
                        what: format!(
                            "segment is {len} bytes, shorter than its {HEADER_SIZE}-byte header"
                        ),
                    }
                } else if initialising {
                    AttachError::NeverInitialised {
                        name: name.into(),
                        path,
                        waited_ms: started.elapsed().as_millis() as u64,
                    }
                } else {
                    AttachError::BadMagic { path }
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub(crate) fn header(&self) -> &RingHeader {
        header_of(&self.map)
    }

    pub(crate) fn consumer(&self, index: usize) -> &ConsumerEntry {
        assert!(index < MAX_CONSUMERS);
        let offset =
            self.geometry.consumers_offset as usize + index * std::mem::size_of::<ConsumerEntry>();
        // SAFETY: the geometry was checked against the file size, so the entry lies inside
        // the mapping; offsets are multiples of 128 from a page-aligned base; the entry is
        // all atomics, valid for any bytes and for stores by other processes.
        unsafe { &*(self.map.as_ptr().add(offset) as *const ConsumerEntry) }
    }

    pub(crate) fn group(&self, index: usize) -> &GroupEntry {
        assert!(index < MAX_GROUPS);
        let offset =
            self.geometry.groups_offset as usize + index * std::mem::size_of::<GroupEntry>();
        // SAFETY: as for `consumer`: inside the checked mapping, 128-aligned, all atomics.
        unsafe { &*(self.map.as_ptr().add(offset) as *const GroupEntry) }
    }

    /// The stamp of slot `index` (`index < slot_count`).
    pub(crate) fn stamp(&self, index: u32) -> &AtomicU64 {
        assert!(index < self.geometry.slot_count);
        // SAFETY: slot offsets are inside the checked mapping and page-aligned, so the
        // first 8 bytes form an aligned AtomicU64.
        unsafe {
            &*(self
                .map
                .as_ptr()
                .add(self.geometry.slot_offset(index) as usize) as *const AtomicU64)
        }
    }

    /// The frame header and attribute area of slot `index` (`FRAME_AREA_SIZE` bytes from
    /// `FRAME_HEADER_OFFSET`), without the stamp.
    ///
    /// # Safety
    /// No process may write these bytes while the slice lives: the slot holds a frame
    /// published for this reader and kept from rewriting by its pin (spec §5.4, §6.3), or
    /// it is the caller's own producer's.
    pub(crate) unsafe fn frame_area(&self, index: u32) -> &[u8] {
        // SAFETY: the area lies inside the mapping (`frame_area_ptr`); nobody writes it
        // while the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.frame_area_ptr(index), FRAME_AREA_SIZE) }
    }

    /// The frame header and attribute area of slot `index`, to write.
    ///
    /// # Safety
    /// The caller is the ring's one producer, holds the claim of this slot (stamped
    /// WRITING, with the lossless floor and lossy pins checked, spec §6.2), and makes no
    /// other reference to these bytes while the slice lives.
    #[allow(clippy::mut_from_ref)] // the claim, not `&self`, gives the exclusivity
    pub(crate) unsafe fn frame_area_mut(&self, index: u32) -> &mut [u8] {
        // SAFETY: inside the mapping; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.frame_area_ptr(index), FRAME_AREA_SIZE) }
    }

    /// The first `len` payload bytes of slot `index` (`len ≤ payload_capacity`).
    ///
    /// # Safety
    /// As for [`frame_area`](Self::frame_area).
    pub(crate) unsafe fn payload(&self, index: u32, len: usize) -> &[u8] {
        assert!(len as u64 <= self.geometry.payload_capacity);
        // SAFETY: inside the slot's payload (checked above); nobody writes it while the
        // slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.payload_ptr(index), len) }
    }

    /// The whole payload of slot `index` (`payload_capacity` bytes, page-aligned), to
    /// write.
    ///
    /// # Safety
    /// As for [`frame_area_mut`](Self::frame_area_mut).
    #[allow(clippy::mut_from_ref)] // the claim, not `&self`, gives the exclusivity
    pub(crate) unsafe fn payload_mut(&self, index: u32) -> &mut [u8] {
        let len = self.geometry.payload_capacity as usize;
        // SAFETY: the payload area lies inside the mapping; exclusive by the contract.
        unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(index), len) }
    }

    fn frame_area_ptr(&self, index: u32) -> *mut u8 {
        assert!(index < self.geometry.slot_count);
        let offset = self.geometry.slot_offset(index) as usize + FRAME_HEADER_OFFSET;
        // SAFETY: the slot lies inside the checked mapping, and FRAME_HEADER_OFFSET +
        // FRAME_AREA_SIZE is its header.
        unsafe { self.map.as_mut_ptr().add(offset) }
    }

    fn payload_ptr(&self, index: u32) -> *mut u8 {
        assert!(index < self.geometry.slot_count);
        let offset = self.geometry.slot_offset(index) as usize + SLOT_HEADER_SIZE;
        // SAFETY: payload = slot header + SLOT_HEADER_SIZE, inside the slot's stride,
        // which lies inside the checked mapping.
        unsafe { self.map.as_mut_ptr().add(offset) }
    }

    /// Holds the segment's membership lock (flock) until the guard drops. The kernel
    /// releases it if the holder dies, so a crash never wedges other processes.
    pub(crate) fn lock_membership(&self) -> MembershipLock<'_> {
        // SAFETY: the fd is open for the life of `self`; flock touches no memory of ours.
        while unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            // Only EINTR is possible for a valid fd with LOCK_EX: retry.
        }
        MembershipLock { segment: self }
    }

    /// Removes the segment's file name; mapped processes keep their mapping.
    pub(crate) fn unlink(&self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Producer identity stored in the header.
    pub(crate) fn producer(&self) -> ProcessId {
        let h = self.header();
        ProcessId {
            pid: h.producer_pid.load(Relaxed),
            start_time: h.producer_start_time.load(Relaxed),
        }
    }
}

/// Guard of the membership flock.
pub(crate) struct MembershipLock<'a> {
    segment: &'a Segment,
}

impl Drop for MembershipLock<'_> {
    fn drop(&mut self) {
        // SAFETY: the fd is open; unlocking a lock we hold cannot fail in a way we handle.
        unsafe { libc::flock(self.segment.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

enum Validation {
    Initialising,
    Invalid(AttachError),
}

/// The ring header at the start of a mapping of at least `HEADER_SIZE` bytes.
fn header_of(map: &MmapRaw) -> &RingHeader {
    assert!(map.len() >= HEADER_SIZE);
    // SAFETY: the mapping holds at least HEADER_SIZE bytes (asserted), is page-aligned
    // and lives as long as the borrow; RingHeader is all atomics, so any bytes are a
    // valid value and stores by other processes, even mid-initialisation, are atomic
    // stores to cells we only load or store atomically.
    unsafe { &*(map.as_ptr() as *const RingHeader) }
}

fn validate(name: &str, path: &Path, map: &MmapRaw, file_len: u64) -> Result<Geometry, Validation> {
    let header = header_of(map);
    // SYNC: pairs with the Release store of `version` in `initialise`; the Relaxed loads
    // of every other line-0 word below see what the creator stored before it.
    let version = header.version.load(Acquire);
    if version == 0 {
        return Err(Validation::Initialising);
    }
    let layout = |what: String| {
        Validation::Invalid(AttachError::Layout {
            name: name.into(),
            what,
        })
    };
    if header.magic.load(Relaxed) != MAGIC {
        return Err(Validation::Invalid(AttachError::BadMagic {
            path: path.to_path_buf(),
        }));
    }
    if version != VERSION {
        return Err(Validation::Invalid(AttachError::Version {
            name: name.into(),
            found: version,
            expected: VERSION,
        }));
    }
    let (header_size, slot_header_size) = (
        header.header_size.load(Relaxed),
        header.slot_header_size.load(Relaxed),
    );
    if header_size != HEADER_SIZE as u32 || slot_header_size != SLOT_HEADER_SIZE as u32 {
        return Err(layout(format!(
            "header size {header_size} and slot header size {slot_header_size}, expected {HEADER_SIZE} and {SLOT_HEADER_SIZE}"
        )));
    }
    let (max_consumers, max_groups) = (
        header.max_consumers.load(Relaxed),
        header.max_groups.load(Relaxed),
    );
    if max_consumers != MAX_CONSUMERS as u32 || max_groups != MAX_GROUPS as u32 {
        return Err(layout(format!(
            "{max_consumers} consumer and {max_groups} group entries, expected {MAX_CONSUMERS} and {MAX_GROUPS}"
        )));
    }
    let stored = Geometry {
        slot_count: header.slot_count.load(Relaxed),
        payload_capacity: header.payload_capacity.load(Relaxed),
        slot_stride: header.slot_stride.load(Relaxed),
        consumers_offset: header.consumers_offset.load(Relaxed),
        groups_offset: header.groups_offset.load(Relaxed),
        slots_offset: header.slots_offset.load(Relaxed),
        segment_size: header.segment_size.load(Relaxed),
    };
    let expected = Geometry::new(stored.slot_count, stored.payload_capacity)
        .filter(|_| stored.slot_count > 0)
        .ok_or_else(|| {
            layout(format!(
                "{} slots of {} bytes overflow",
                stored.slot_count, stored.payload_capacity
            ))
        })?;
    if stored != expected {
        let fields = [
            ("slot_stride", stored.slot_stride, expected.slot_stride),
            (
                "consumers_offset",
                stored.consumers_offset,
                expected.consumers_offset,
            ),
            (
                "groups_offset",
                stored.groups_offset,
                expected.groups_offset,
            ),
            ("slots_offset", stored.slots_offset, expected.slots_offset),
            ("segment_size", stored.segment_size, expected.segment_size),
        ];
        let differ: Vec<String> = fields
            .iter()
            .filter(|(_, s, e)| s != e)
            .map(|(what, s, e)| format!("{what} {s} instead of {e}"))
            .collect();
        return Err(layout(format!(
            "for {} slots of {} bytes: {}",
            expected.slot_count,
            expected.payload_capacity,
            differ.join(", ")
        )));
    }
    if expected.segment_size != file_len {
        return Err(layout(format!(
            "header says {} bytes but the file has {file_len}",
            expected.segment_size
        )));
    }
    Ok(expected)
}

/// Inspects an existing segment that blocks `create`; removes it when its producer is
/// gone (or it is not a readable ring), refuses when the producer lives.
fn remove_if_stale(name: &str, path: &Path) -> Result<Option<StaleSegment>, CreateError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let owner = fs::metadata(path).map_or(u32::MAX, |m| m.uid());
            return Err(CreateError::OwnedByOther {
                name: name.into(),
                path: path.into(),
                owner,
                you: effective_uid(),
            });
        }
        Err(e) => {
            return Err(CreateError::Io {
                op: "open",
                path: path.into(),
                source: e,
            })
        }
    };
    let producer_pid = match Segment::open_file(name, path.to_path_buf(), file, INIT_GRACE) {
        Ok(segment) => {
            let producer = segment.producer();
            // SYNC: pairs with the Release store in `end_stream`; only the state is used.
            let finished = segment.header().producer_state.load(Acquire) == PRODUCER_FINISHED;
            if producer.is_alive() && !finished {
                return Err(CreateError::Exists {
                    name: name.into(),
                    pid: producer.pid,
                });
            }
            producer.pid
        }
        Err(AttachError::OwnedByOther { owner, you, .. }) => {
            return Err(CreateError::OwnedByOther {
                name: name.into(),
                path: path.into(),
                owner,
                you,
            });
        }
        Err(_) => 0,
    };
    fs::remove_file(path).map_err(|e| CreateError::Io {
        op: "remove stale",
        path: path.into(),
        source: e,
    })?;
    Ok(Some(StaleSegment {
        path: path.into(),
        producer_pid,
    }))
}

/// True when tmpfs may back this mapping with transparent huge pages on request.
fn huge_pages_available() -> bool {
    fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .map(|s| {
            ["[always]", "[advise]", "[within_size]"]
                .iter()
                .any(|m| s.contains(m))
        })
        .unwrap_or(false)
}

/// Names of every ring segment in /dev/shm.
pub fn list_names() -> io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(SHM_DIR)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
                .map(String::from)
        })
        .collect();
    names.sort();
    Ok(names)
}
