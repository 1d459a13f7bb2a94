//! The io_uring output engine every file writer uses: one ring per writer (rings are not
//! shared between threads or processes), a registered page-aligned staging buffer,
//! batched submissions, and errors returned as `io::Error` with the kernel's errno.
//!
//! Every operation goes through [`Uring::run`], which returns only when the kernel is done
//! with every operation of its batch — on success and on every error alike — so the
//! buffers a call borrows outlive the kernel's use of them, and no completion is left for
//! a later call to mistake for its own. Batching happens inside a call: a large write goes
//! in as several operations with one `io_uring_enter`, and a whole small file (open,
//! write, fdatasync, close, rename) is one linked chain with one `io_uring_enter`.

use io_uring::{opcode, squeue, types, EnterFlags, IoUring};
use std::alloc::{self, Layout};
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// O_DIRECT transfers must start, end and sit in memory at multiples of this.
pub const DIRECT_ALIGN: usize = 4096;

/// Largest single write operation; bigger writes are split (the length field is 32 bits).
const MAX_OP_BYTES: usize = 64 << 20;

/// Submission queue depth: enough for a frame split into operations plus a file chain.
const DEPTH: u32 = 64;

/// The fixed-file slot a whole-file chain opens its file into.
const CHAIN_SLOT: u32 = 0;

/// Files made durable together in one submission by [`Uring::publish_batch`] (each
/// takes a fixed-file slot after `CHAIN_SLOT` and three queue entries).
const SYNC_FILES: usize = 16;

/// Rounds `n` up to the O_DIRECT alignment.
pub fn align_up(n: usize) -> usize {
    n.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
}

/// True when a transfer of `data` at `offset` meets O_DIRECT's alignment rules.
pub fn direct_ok(data: &[u8], offset: u64) -> bool {
    (data.as_ptr() as usize) % DIRECT_ALIGN == 0
        && data.len() % DIRECT_ALIGN == 0
        && offset % DIRECT_ALIGN as u64 == 0
}

/// A page-aligned, zeroed heap buffer.
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let len = align_up(len.max(1));
        let layout = Layout::from_size_align(len, DIRECT_ALIGN).expect("aligned layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `len` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe {
            alloc::dealloc(
                self.ptr,
                Layout::from_size_align_unchecked(self.len, DIRECT_ALIGN),
            )
        }
    }
}

// SAFETY: the buffer is plain owned memory; nothing aliases it across threads.
unsafe impl Send for AlignedBuf {}

/// One writer's io_uring instance and its registered staging buffer.
pub struct Uring {
    ring: IoUring,
    staging: AlignedBuf,
    /// Test hook: how an `io_uring_enter` fails, after `fault_after` calls that do not.
    #[cfg(test)]
    fault: Option<tests::Fault>,
    #[cfg(test)]
    fault_after: usize,
}

/// How a whole file is published by [`Uring::write_file`].
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    /// Replace a file of the same name (otherwise such a file makes the call fail, EEXIST).
    pub overwrite: bool,
    /// fdatasync before the rename, so the name never points at unwritten blocks.
    pub sync: bool,
    /// Rename to the final name in the same chain. `false` leaves the file under its
    /// temporary name with its writeback started (sync_file_range), for
    /// [`Uring::publish_batch`] to make durable and rename with others.
    pub rename: bool,
    /// Write through O_DIRECT, the file padded with zeros to a multiple of
    /// [`DIRECT_ALIGN`]: the bytes go to the disk without the page cache, so no pages are
    /// allocated for them and a later sync has no data left to write back. File systems
    /// without O_DIRECT (tmpfs before Linux 6.6) refuse the open with EINVAL.
    pub direct: bool,
}

/// A file written under a temporary name, waiting for [`Uring::publish_batch`].
#[derive(Debug)]
pub struct Staged {
    pub temp: std::path::PathBuf,
    pub path: std::path::PathBuf,
}

impl Uring {
    /// A ring with a registered staging buffer of at least `staging_bytes`.
    pub fn new(staging_bytes: usize) -> io::Result<Uring> {
        let staging = AlignedBuf::new(staging_bytes);
        Ok(Uring {
            ring: new_ring(&staging)?,
            staging,
            #[cfg(test)]
            fault: None,
            #[cfg(test)]
            fault_after: 0,
        })
    }

    /// The registered staging buffer, at least `len` bytes (grown and re-registered when
    /// smaller). Contents are unspecified.
    pub fn staging_mut(&mut self, len: usize) -> io::Result<&mut [u8]> {
        if self.staging.len < len {
            self.ring.submitter().unregister_buffers()?;
            self.staging = AlignedBuf::new(len);
            register(&self.ring, &self.staging)?;
        }
        Ok(&mut self.staging.as_mut_slice()[..len])
    }

    /// Runs `entries` as one batch: queues them (user data: the index), submits them and
    /// waits for their completions; returns their results in order.
    ///
    /// No operation of the batch is in flight when this returns, whatever it returns. When
    /// `io_uring_enter` fails (other than EINTR), the call waits for every operation the
    /// kernel already took and returns the kernel's error; operations it never took never
    /// run, because the ring holding them is replaced before its next use. The caller
    /// should treat the whole batch as failed.
    ///
    /// # Safety
    /// Every pointer in `entries` (a write's source, a read's destination, a path) must
    /// stay valid for the kernel's use until this returns, and a read's destination must
    /// not be accessed otherwise meanwhile: memory the caller borrows across the call
    /// satisfies this.
    unsafe fn run(&mut self, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
        if !self.ring.submission().is_empty() {
            // Left by a batch whose submission failed: they point at memory that is gone.
            self.replace_ring()?;
        }
        let n = entries.len();
        let tagged: Vec<squeue::Entry> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.clone().user_data(i as u64))
            .collect();
        // SAFETY: the caller keeps every pointer valid until we return, and we return only
        // when the kernel has finished every entry it took (below).
        if unsafe { self.ring.submission().push_multiple(&tagged) }.is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a batch of {n} operations exceeds the io_uring queue of {DEPTH}"),
            ));
        }
        let mut results = vec![0i32; n];
        let mut seen = 0;
        while seen < n {
            match self.enter(n - seen) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    self.settle(n, seen);
                    return Err(e);
                }
            }
            seen += self.reap(&mut results);
        }
        Ok(results)
    }

    /// Submits what is queued and waits for `want` completions.
    fn enter(&mut self, want: usize) -> io::Result<usize> {
        #[cfg(test)]
        if self.fault.is_some() {
            match self.fault_after.checked_sub(1) {
                Some(left) => self.fault_after = left,
                None => return Err(self.fault.take().expect("checked").inject(&self.ring)),
            }
        }
        self.ring.submit_and_wait(want)
    }

    /// Takes the completions waiting; returns how many belong to the current batch.
    fn reap(&mut self, results: &mut [i32]) -> usize {
        let mut ours = 0;
        for cqe in self.ring.completion() {
            if let Some(slot) = results.get_mut(cqe.user_data() as usize) {
                *slot = cqe.result();
                ours += 1;
            }
        }
        ours
    }

    /// After a failed submission of a batch of `n`, of which `seen` completed: waits,
    /// submitting nothing more, until every operation the kernel took has completed.
    fn settle(&mut self, n: usize, mut seen: usize) {
        let mut discard = vec![0i32; n];
        loop {
            seen += self.reap(&mut discard);
            // The kernel takes entries from the head of the queue: what is still there it
            // never saw, and never will (`run` replaces the ring first).
            if seen >= n - self.ring.submission().len() {
                return;
            }
            // SAFETY: waits for one completion; submits nothing and passes no argument.
            let waited = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    0,
                    1,
                    EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
            match waited.map_err(|e| e.raw_os_error()) {
                Ok(_) | Err(Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(_) => {
                    // The kernel will not say when it is done with memory we lent it, and
                    // returning would let the caller free that memory under it.
                    eprintln!(
                        "streamd: io_uring cannot wait for its own operations; stopping rather than free memory the kernel may still write"
                    );
                    std::process::abort();
                }
            }
        }
    }

    /// A new ring in place of this one; the entries the old one never took die with it.
    fn replace_ring(&mut self) -> io::Result<()> {
        self.ring = new_ring(&self.staging)?;
        Ok(())
    }

    /// Writes all of `data` at `offset`, split into operations submitted together.
    pub fn write_all_at(&mut self, fd: RawFd, mut data: &[u8], mut offset: u64) -> io::Result<()> {
        while !data.is_empty() {
            let ops: Vec<(usize, usize)> = (0..data.len())
                .step_by(MAX_OP_BYTES)
                .take(DEPTH as usize)
                .map(|start| (start, (data.len() - start).min(MAX_OP_BYTES)))
                .collect();
            let entries: Vec<squeue::Entry> = ops
                .iter()
                .map(|&(start, len)| {
                    opcode::Write::new(types::Fd(fd), data[start..].as_ptr(), len as u32)
                        .offset(offset + start as u64)
                        .build()
                })
                .collect();
            // SAFETY: the sources lie in `data`, borrowed for this whole call.
            let results = unsafe { self.run(&entries) }?;
            // The first short or failed operation decides where to go on from.
            let mut done = 0usize;
            for (&(start, len), &res) in ops.iter().zip(&results) {
                if res < 0 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                done = start + res as usize;
                if (res as usize) < len {
                    break;
                }
            }
            if done == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the disk took no bytes",
                ));
            }
            data = &data[done..];
            offset += done as u64;
        }
        Ok(())
    }

    /// Writes the first `len` bytes of the staging buffer at `offset` (a registered-buffer
    /// write: the kernel skips pinning the pages again).
    pub fn write_staging_at(&mut self, fd: RawFd, len: usize, offset: u64) -> io::Result<()> {
        if len > self.staging.len {
            return Err(beyond_staging(len, self.staging.len));
        }
        let mut done = 0usize;
        while done < len {
            let chunk = (len - done).min(MAX_OP_BYTES);
            // SAFETY: `done + chunk <= len <= staging.len`: the range lies in the buffer.
            let ptr = unsafe { self.staging.ptr.add(done) };
            let entry = opcode::WriteFixed::new(types::Fd(fd), ptr, chunk as u32, 0)
                .offset(offset + done as u64)
                .build();
            // SAFETY: the source lies in the staging buffer, which `run` does not replace.
            let res = unsafe { self.run(&[entry]) }?[0];
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res));
            }
            if res == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the disk took no bytes",
                ));
            }
            done += res as usize;
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many (short at end of file).
    pub fn read_at(&mut self, fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let chunk = (buf.len() - done).min(MAX_OP_BYTES);
            let entry = opcode::Read::new(types::Fd(fd), buf[done..].as_mut_ptr(), chunk as u32)
                .offset(offset + done as u64)
                .build();
            // SAFETY: the destination lies in `buf`, borrowed mutably for this whole call.
            let res = unsafe { self.run(&[entry]) }?[0];
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res));
            }
            if res == 0 {
                break;
            }
            done += res as usize;
        }
        Ok(done)
    }

    /// fdatasync: what was written so far survives a power cut.
    pub fn datasync(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: the operation points at no memory.
        check(unsafe { self.run(&[entry]) }?[0])
    }

    /// Opens (creates) `path` and returns the descriptor; `flags` as for open(2).
    pub fn open(&mut self, path: &Path, flags: i32, mode: u32) -> io::Result<RawFd> {
        let c_path = c_path(path)?;
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c_path.as_ptr())
            .flags(flags | libc::O_CLOEXEC)
            .mode(mode)
            .build();
        // SAFETY: the path is `c_path`, which lives until the end of this function.
        let fd = unsafe { self.run(&[entry]) }?[0];
        check(fd)?;
        Ok(fd)
    }

    /// Closes a descriptor opened by [`Uring::open`].
    pub fn close(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = opcode::Close::new(types::Fd(fd)).build();
        // SAFETY: the operation points at no memory.
        check(unsafe { self.run(&[entry]) }?[0])
    }

    /// Publishes a whole file: the first `len` staging bytes are written to `temp`, which
    /// is then renamed to `path` — one linked chain (open, write, fdatasync, close, rename),
    /// one system call. A reader, or a crash at any point, sees the file whole or not at
    /// all under its final name; a failure removes `temp`.
    pub fn write_file(
        &mut self,
        temp: &Path,
        path: &Path,
        len: usize,
        options: FileOptions,
    ) -> io::Result<()> {
        // One operation writes it all: its length is 32 bits.
        let most = self.staging.len.min(u32::MAX as usize);
        if len > most {
            return Err(beyond_staging(len, most));
        }
        let (c_temp, c_path) = (c_path(temp)?, c_path(path)?);
        let (len, open_flags) = if options.direct {
            // The staging buffer is a whole number of alignment units (AlignedBuf).
            let padded = align_up(len);
            self.staging.as_mut_slice()[len..padded].fill(0);
            (padded, libc::O_DIRECT)
        } else {
            (len, 0)
        };
        if len > most {
            return Err(beyond_staging(len, most));
        }
        let slot = types::DestinationSlot::try_from_slot_target(CHAIN_SLOT).expect("slot 0");
        let file = types::Fixed(CHAIN_SLOT);
        let mut chain = vec![
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c_temp.as_ptr())
                .flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | open_flags)
                .mode(0o644)
                // A direct descriptor: never in the fd table, so no O_CLOEXEC (refused).
                .file_index(Some(slot))
                .build(),
            opcode::WriteFixed::new(file, self.staging.ptr, len as u32, 0).build(),
        ];
        if options.sync {
            chain.push(
                opcode::Fsync::new(file)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            );
        }
        if !options.rename && !options.direct {
            // Start writing the pages back now, without waiting: the disk works while
            // the next file is encoded, and the batch's sync finds little left to do.
            chain.push(
                opcode::SyncFileRange::new(file, len as u32)
                    .flags(libc::SYNC_FILE_RANGE_WRITE)
                    .build(),
            );
        }
        chain.push(opcode::Close::new(file).build());
        if options.rename {
            chain.push(rename(&c_temp, &c_path, options.overwrite));
        }
        let n = chain.len();
        for entry in &mut chain[..n - 1] {
            *entry = entry.clone().flags(squeue::Flags::IO_LINK);
        }
        // SAFETY: the paths are `c_temp` and `c_path`, which live until the end of this
        // function; the source is the staging buffer (`len` checked above), which `run`
        // does not replace.
        let results = match unsafe { self.run(&chain) } {
            Ok(results) => results,
            Err(e) => {
                // Which of the chain ran is unknown: clear what it may have left.
                self.close_chain_file();
                let _ = self.unlink(&c_temp);
                return Err(e);
            }
        };
        let failure = results.iter().enumerate().find_map(|(i, &res)| {
            if i == 1 && res >= 0 && (res as usize) < len {
                // A short write broke the chain: the rest, written alone, tells why
                // (ENOSPC, or EFBIG at a file-size limit).
                Some(self.write_rest(file, len, res as usize))
            } else if res < 0 && res != -libc::ECANCELED {
                Some(io::Error::from_raw_os_error(-res))
            } else {
                None
            }
        });
        let Some(error) = failure else {
            return Ok(());
        };
        // A broken chain may leave the fixed slot open and the temporary name behind.
        let close_at = if options.rename { n - 2 } else { n - 1 };
        if results[0] >= 0 && results[close_at] < 0 {
            self.close_chain_file();
        }
        if !options.rename || results[n - 1] < 0 {
            let _ = self.unlink(&c_temp);
        }
        Err(error)
    }
}

impl Uring {
    /// Makes staged files durable and publishes them: each is fdatasynced (all of them
    /// in flight together, so the file system commits its journal once for the lot,
    /// not once per file), then renamed to its final name (without replacing unless
    /// `overwrite`), then each folder is fsynced so the names survive a power cut too. A
    /// file whose sync or rename fails is removed; its result says why. Results are in
    /// the order of `files`.
    pub fn publish_batch(&mut self, files: &[Staged], overwrite: bool) -> Vec<io::Result<()>> {
        let names: Vec<io::Result<(CString, CString)>> = files
            .iter()
            .map(|f| Ok((c_path(&f.temp)?, c_path(&f.path)?)))
            .collect();
        let mut results: Vec<io::Result<()>> = names
            .iter()
            .map(|name| match name {
                Ok(_) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            })
            .collect();
        // 1. fdatasync every file: SYNC_FILES chains (open, fdatasync, close) at a time.
        let named: Vec<usize> = (0..files.len()).filter(|&i| names[i].is_ok()).collect();
        for chunk in named.chunks(SYNC_FILES) {
            let mut entries = Vec::with_capacity(3 * chunk.len());
            for (k, &i) in chunk.iter().enumerate() {
                let Ok((temp, _)) = &names[i] else { continue };
                let slot_no = CHAIN_SLOT + 1 + k as u32;
                let slot = types::DestinationSlot::try_from_slot_target(slot_no).expect("slot");
                let file = types::Fixed(slot_no);
                entries.push(
                    opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), temp.as_ptr())
                        .flags(libc::O_WRONLY)
                        .file_index(Some(slot))
                        .build()
                        .flags(squeue::Flags::IO_LINK),
                );
                entries.push(
                    opcode::Fsync::new(file)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .flags(squeue::Flags::IO_LINK),
                );
                entries.push(opcode::Close::new(file).build());
            }
            // SAFETY: the paths live in `names` until this function returns; the
            // operations point at nothing else.
            match unsafe { self.run(&entries) } {
                Ok(res) => {
                    for (k, &i) in chunk.iter().enumerate() {
                        let chain = &res[3 * k..3 * k + 3];
                        if let Some(&r) = chain.iter().find(|&&r| r < 0 && r != -libc::ECANCELED) {
                            results[i] = Err(io::Error::from_raw_os_error(-r));
                        }
                        if chain[0] >= 0 && chain[2] < 0 {
                            // Opened but not closed (the sync failed): close the slot.
                            self.close_fixed(CHAIN_SLOT + 1 + k as u32);
                        }
                    }
                }
                Err(e) => {
                    for (k, &i) in chunk.iter().enumerate() {
                        results[i] = Err(io::Error::new(e.kind(), e.to_string()));
                        self.close_fixed(CHAIN_SLOT + 1 + k as u32);
                    }
                }
            }
        }
        // 2. Rename the durable ones (independent operations, submitted together).
        let durable: Vec<usize> = (0..files.len()).filter(|&i| results[i].is_ok()).collect();
        for chunk in durable.chunks(DEPTH as usize) {
            let entries: Vec<squeue::Entry> = chunk
                .iter()
                .filter_map(|&i| names[i].as_ref().ok())
                .map(|(temp, path)| rename(temp, path, overwrite))
                .collect();
            // SAFETY: the paths live in `names` until this function returns.
            match unsafe { self.run(&entries) } {
                Ok(res) => {
                    for (&i, &r) in chunk.iter().zip(&res) {
                        if r < 0 {
                            results[i] = Err(io::Error::from_raw_os_error(-r));
                        }
                    }
                }
                Err(e) => {
                    // `run` waited for what the kernel took before the call failed: a
                    // temporary name that is gone was renamed, and its file is published.
                    for &i in chunk {
                        let renamed = files[i]
                            .temp
                            .symlink_metadata()
                            .is_err_and(|m| m.kind() == io::ErrorKind::NotFound);
                        if !renamed {
                            results[i] = Err(io::Error::new(e.kind(), e.to_string()));
                        }
                    }
                }
            }
        }
        // 3. The renames themselves: one fsync of each folder they happened in.
        let mut folders: Vec<&Path> = (0..files.len())
            .filter(|&i| results[i].is_ok())
            .map(|i| files[i].path.parent().unwrap_or(Path::new(".")))
            .collect();
        folders.dedup();
        for folder in folders {
            let synced = self
                .open(folder, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .and_then(|fd| {
                    let synced = self.datasync(fd);
                    let closed = self.close(fd);
                    synced.and(closed)
                });
            if let Err(e) = synced {
                // Those names may not survive a power cut: say so for their files.
                for (i, r) in results.iter_mut().enumerate() {
                    if r.is_ok() && files[i].path.parent() == Some(folder) {
                        *r = Err(io::Error::new(
                            e.kind(),
                            format!("fsync of {}: {e}", folder.display()),
                        ));
                    }
                }
            }
        }
        // What was not published leaves no temporary file behind.
        for (result, name) in results.iter().zip(&names) {
            if let (Err(_), Ok((temp, _))) = (result, name) {
                let _ = self.unlink(temp);
            }
        }
        results
    }

    /// After a short write of `done` of `len` staging bytes to the chain's file: writes
    /// the rest and returns the error that stopped it.
    fn write_rest(&mut self, file: types::Fixed, len: usize, done: usize) -> io::Error {
        // SAFETY: done < len <= staging.len: the range lies in the buffer.
        let ptr = unsafe { self.staging.ptr.add(done) };
        let entry = opcode::WriteFixed::new(file, ptr, (len - done) as u32, 0)
            .offset(done as u64)
            .build();
        // SAFETY: the source lies in the staging buffer, which `run` does not replace.
        match unsafe { self.run(&[entry]) } {
            Ok(results) if results[0] < 0 => io::Error::from_raw_os_error(-results[0]),
            Ok(_) => io::Error::from_raw_os_error(libc::ENOSPC),
            Err(e) => e,
        }
    }

    /// Closes the chain's fixed file slot, if anything is open in it.
    fn close_chain_file(&mut self) {
        self.close_fixed(CHAIN_SLOT);
    }

    /// Closes fixed file slot `slot`, if anything is open in it.
    fn close_fixed(&mut self, slot: u32) {
        let close = opcode::Close::new(types::Fixed(slot)).build();
        // SAFETY: the operation points at no memory.
        let _ = unsafe { self.run(&[close]) };
    }

    /// Removes the name `path`.
    fn unlink(&mut self, path: &CString) -> io::Result<()> {
        let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).build();
        // SAFETY: the path is borrowed for this whole call.
        check(unsafe { self.run(&[entry]) }?[0])
    }
}

/// A ring with the chain's fixed-file slot and `staging` registered.
fn new_ring(staging: &AlignedBuf) -> io::Result<IoUring> {
    let ring = IoUring::new(DEPTH)?;
    ring.submitter()
        .register_files_sparse(1 + SYNC_FILES as u32)?;
    register(&ring, staging)?;
    Ok(ring)
}

fn register(ring: &IoUring, staging: &AlignedBuf) -> io::Result<()> {
    let iov = libc::iovec {
        iov_base: staging.ptr.cast(),
        iov_len: staging.len,
    };
    // SAFETY: the staging buffer outlives its registration: `staging_mut` unregisters it
    // before replacing it, `Uring` drops its ring first, and a ring that `replace_ring`
    // drops has nothing in flight.
    unsafe { ring.submitter().register_buffers(&[iov]) }
}

/// A rename of `temp` to `path`, refusing to replace an existing file unless `overwrite`.
fn rename(temp: &CString, path: &CString, overwrite: bool) -> squeue::Entry {
    let flags = if overwrite { 0 } else { libc::RENAME_NOREPLACE };
    opcode::RenameAt::new(
        types::Fd(libc::AT_FDCWD),
        temp.as_ptr(),
        types::Fd(libc::AT_FDCWD),
        path.as_ptr(),
    )
    .flags(flags)
    .build()
}

fn beyond_staging(len: usize, staging: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{len} bytes asked of a staging buffer of {staging}"),
    )
}

fn check(res: i32) -> io::Result<()> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(())
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A failed `io_uring_enter`, as the kernel can return it.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Fault {
        /// Refused before the kernel took anything from the queue (EAGAIN, EBUSY).
        Refused(i32),
        /// The kernel took every queued entry, then the call failed.
        FailedAfterTaking(i32),
    }

    impl Fault {
        pub(super) fn inject(self, ring: &IoUring) -> io::Error {
            let errno = match self {
                Fault::Refused(errno) => errno,
                Fault::FailedAfterTaking(errno) => {
                    let taken = ring.submit();
                    assert!(matches!(taken, Ok(n) if n > 0), "submitted: {taken:?}");
                    errno
                }
            };
            io::Error::from_raw_os_error(errno)
        }
    }

    /// A file of `len` bytes `fill`, opened read-write through `uring`.
    fn file_of(uring: &mut Uring, dir: &Path, len: usize, fill: u8) -> RawFd {
        let path = dir.join("f.bin");
        std::fs::write(&path, vec![fill; len]).unwrap();
        uring.open(&path, libc::O_RDWR, 0).unwrap()
    }

    #[test]
    fn a_refused_submission_reports_the_errno_and_its_operations_never_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut uring = Uring::new(4096).unwrap();
        let fd = file_of(&mut uring, dir.path(), 4096, b'A');
        uring.fault = Some(Fault::Refused(libc::EAGAIN));
        let mut refused = vec![0u8; 4096];
        let err = uring.read_at(fd, &mut refused, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
        // The next call gets its own completion (a short read at the end of the file),
        // and the refused read never runs into the buffer its caller got back.
        let mut mine = vec![0u8; 100];
        assert_eq!(uring.read_at(fd, &mut mine, 4000).unwrap(), 96);
        assert_eq!(mine[..96], [b'A'; 96]);
        assert!(
            refused.iter().all(|&b| b == 0),
            "the refused read ran later"
        );

        // A whole-file chain: refused, it leaves nothing; the fixed slot is free again.
        let (temp, path) = (dir.path().join(".g.part"), dir.path().join("g.bin"));
        let options = FileOptions {
            overwrite: false,
            sync: true,
            rename: true,
            direct: false,
        };
        uring.staging_mut(10).unwrap().fill(7);
        uring.fault = Some(Fault::Refused(libc::EBUSY));
        let err = uring.write_file(&temp, &path, 10, options).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        assert!(!temp.exists() && !path.exists());
        uring.write_file(&temp, &path, 10, options).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 10]);
        uring.close(fd).unwrap();
    }

    #[test]
    fn a_submission_that_fails_after_the_kernel_took_it_waits_for_it() {
        let mut uring = Uring::new(4096).unwrap();
        let timeout = types::Timespec::new().nsec(20_000_000);
        uring.fault = Some(Fault::FailedAfterTaking(libc::ENOMEM));
        // SAFETY: `timeout` lives until the end of the test.
        let err = unsafe { uring.run(&[opcode::Timeout::new(&timeout).build()]) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        // The timeout in flight was waited for: its completion is gone, and no other
        // comes while we wait five times as long for one.
        let quiet = types::Timespec::new().nsec(100_000_000);
        let args = types::SubmitArgs::new().timespec(&quiet);
        let waited = uring.ring.submitter().submit_with_args(1, &args);
        assert_eq!(waited.map_err(|e| e.raw_os_error()), Err(Some(libc::ETIME)));
        assert!(uring.ring.completion().is_empty());

        // A write taken by the kernel is complete when the error comes back, and the next
        // call gets its own completion.
        let dir = tempfile::tempdir().unwrap();
        let fd = file_of(&mut uring, dir.path(), 0, 0);
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
        uring.fault = Some(Fault::FailedAfterTaking(libc::ENOMEM));
        let err = uring.write_all_at(fd, &data, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
        assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), data);
        let mut mine = [0u8; 10];
        assert_eq!(
            uring.read_at(fd, &mut mine, data.len() as u64 - 4).unwrap(),
            4
        );
        assert_eq!(mine[..4], data[data.len() - 4..]);
        uring.close(fd).unwrap();
    }

    #[test]
    fn writes_reads_and_publishes_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut uring = Uring::new(8192).unwrap();
        let path = dir.path().join("a.bin");
        let fd = uring
            .open(&path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o644)
            .unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        uring.write_all_at(fd, &data, 100).unwrap();
        uring.datasync(fd).unwrap();
        let mut back = vec![0u8; data.len() + 50];
        let n = uring.read_at(fd, &mut back, 100).unwrap();
        assert_eq!(n, data.len());
        assert_eq!(&back[..n], &data[..]);
        uring.close(fd).unwrap();

        let staging = uring.staging_mut(20_000).unwrap();
        staging.fill(7);
        let (temp, final_path) = (dir.path().join(".b.part"), dir.path().join("b.bin"));
        let options = FileOptions {
            overwrite: false,
            sync: true,
            rename: true,
            direct: false,
        };
        uring
            .write_file(&temp, &final_path, 20_000, options)
            .unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), vec![7u8; 20_000]);
        assert!(!temp.exists());
        // No overwrite: the second publish fails with EEXIST and leaves nothing behind.
        let err = uring
            .write_file(&temp, &final_path, 10, options)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        assert!(!temp.exists());
        assert_eq!(std::fs::read(&final_path).unwrap().len(), 20_000);
        let replace = FileOptions {
            overwrite: true,
            ..options
        };
        uring.write_file(&temp, &final_path, 10, replace).unwrap();
        assert_eq!(std::fs::read(&final_path).unwrap(), vec![7u8; 10]);
        // The fixed slot was released: another file can go through it.
        let other = dir.path().join("c.bin");
        uring.write_file(&temp, &other, 5, options).unwrap();
        let file = std::fs::File::open(&other).unwrap();
        assert!(file.as_raw_fd() >= 0);
    }

    #[test]
    fn direct_files_are_padded_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut uring = Uring::new(4096).unwrap();
        let options = FileOptions {
            overwrite: false,
            sync: false,
            rename: true,
            direct: true,
        };
        // Leftovers of a larger earlier file must not reach the padding.
        uring.staging_mut(3 * DIRECT_ALIGN).unwrap().fill(9);
        uring.staging_mut(5000).unwrap().fill(7);
        let path = dir.path().join("d.bin");
        uring
            .write_file(&dir.path().join(".d.part"), &path, 5000, options)
            .unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 2 * DIRECT_ALIGN);
        assert_eq!(&back[..5000], &[7u8; 5000][..]);
        assert!(back[5000..].iter().all(|&b| b == 0));
    }

    /// Files `names` in `dir`, file k of 100 bytes k + 1, staged for a batch.
    fn staged(uring: &mut Uring, dir: &Path, names: &[&str]) -> Vec<Staged> {
        let stage = FileOptions {
            overwrite: false,
            sync: false,
            rename: false,
            direct: false,
        };
        let mut files = Vec::new();
        for (i, name) in names.iter().enumerate() {
            uring.staging_mut(100).unwrap().fill(i as u8 + 1);
            let staged = Staged {
                temp: dir.join(format!(".{name}.part")),
                path: dir.join(name),
            };
            uring
                .write_file(&staged.temp, &staged.path, 100, stage)
                .unwrap();
            assert!(staged.temp.exists() && !staged.path.exists());
            files.push(staged);
        }
        files
    }

    #[test]
    fn staged_files_appear_whole_only_when_the_batch_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut uring = Uring::new(4096).unwrap();
        let files = staged(&mut uring, dir.path(), &["a", "b", "c"]);
        std::fs::write(dir.path().join("c"), b"already there").unwrap();
        let results = uring.publish_batch(&files, false);
        assert!(results[0].is_ok() && results[1].is_ok());
        let refused = results[2].as_ref().unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), vec![1u8; 100]);
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), vec![2u8; 100]);
        assert_eq!(
            std::fs::read(dir.path().join("c")).unwrap(),
            b"already there"
        );
        assert!(
            files.iter().all(|f| !f.temp.exists()),
            "no temporary file is left"
        );
    }

    #[test]
    fn a_failed_rename_submission_counts_the_files_the_kernel_renamed() {
        for (fault, renamed) in [
            (Fault::FailedAfterTaking(libc::ENOMEM), true),
            (Fault::Refused(libc::EBUSY), false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut uring = Uring::new(4096).unwrap();
            let files = staged(&mut uring, dir.path(), &["a", "b"]);
            // The batch's first call syncs the files; the second, its renames, fails.
            uring.fault = Some(fault);
            uring.fault_after = 1;
            let results = uring.publish_batch(&files, false);
            assert!(uring.fault.is_none(), "{fault:?} was not injected");
            for (k, (file, result)) in files.iter().zip(&results).enumerate() {
                assert_eq!(result.is_ok(), renamed, "{fault:?}: {result:?}");
                if renamed {
                    assert_eq!(std::fs::read(&file.path).unwrap(), vec![k as u8 + 1; 100]);
                } else {
                    let kind = result.as_ref().unwrap_err().kind();
                    assert_eq!(kind, io::ErrorKind::ResourceBusy);
                    assert!(!file.path.exists());
                }
                assert!(!file.temp.exists(), "a temporary file is left");
            }
        }
    }

    #[test]
    fn errors_carry_the_errno() {
        let mut uring = Uring::new(4096).unwrap();
        let err = uring
            .open(
                Path::new("/nonexistent-dir/x"),
                libc::O_WRONLY | libc::O_CREAT,
                0o644,
            )
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let options = FileOptions {
            overwrite: false,
            sync: false,
            rename: true,
            direct: false,
        };
        let err = uring
            .write_file(
                Path::new("/nonexistent-dir/.x"),
                Path::new("/nonexistent-dir/x"),
                10,
                options,
            )
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
