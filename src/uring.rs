//! The io_uring output engine every file writer uses: one ring per writer (rings are not
//! shared between threads or processes), a registered page-aligned staging buffer,
//! batched submissions, and errors returned as `io::Error` with the kernel's errno.
//!
//! Every call submits its operations and waits for all of their completions before it
//! returns, so the buffers a call borrows outlive the kernel's use of them: that is the
//! invariant every `unsafe` push below relies on. Batching happens inside a call: a large
//! write goes in as several operations with one `io_uring_enter`, and a whole small file
//! (open, write, fdatasync, close, rename) is one linked chain with one `io_uring_enter`.

use io_uring::{opcode, squeue, types, IoUring};
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
        let ring = IoUring::new(DEPTH)?;
        ring.submitter()
            .register_files_sparse(1 + SYNC_FILES as u32)?;
        let mut uring = Uring {
            ring,
            staging: AlignedBuf::new(staging_bytes),
        };
        uring.register_staging()?;
        Ok(uring)
    }

    fn register_staging(&mut self) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: self.staging.ptr.cast(),
            iov_len: self.staging.len,
        };
        // SAFETY: the staging buffer lives as long as the ring's registration: it is
        // unregistered before it is replaced (`staging_mut`) and the ring drops first.
        unsafe { self.ring.submitter().register_buffers(&[iov]) }
    }

    /// The registered staging buffer, at least `len` bytes (grown and re-registered when
    /// smaller). Contents are unspecified.
    pub fn staging_mut(&mut self, len: usize) -> io::Result<&mut [u8]> {
        if self.staging.len < len {
            self.ring.submitter().unregister_buffers()?;
            self.staging = AlignedBuf::new(len);
            self.register_staging()?;
        }
        Ok(&mut self.staging.as_mut_slice()[..len])
    }

    /// Submits what is queued and waits for `n` completions; returns their results in
    /// user-data order (user data is the operation's index in the batch).
    fn complete(&mut self, n: usize) -> io::Result<Vec<i32>> {
        let mut results = vec![0i32; n];
        let mut seen = 0;
        while seen < n {
            match self.ring.submit_and_wait(n - seen) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                results[cqe.user_data() as usize] = cqe.result();
                seen += 1;
            }
        }
        Ok(results)
    }

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: every entry pushed points at memory borrowed by the calling method for
        // the whole call, and each method waits for all its completions (`complete`)
        // before returning, so the kernel never sees a dangling pointer. The queue has
        // room: callers push at most DEPTH entries per `complete`.
        unsafe {
            self.ring
                .submission()
                .push(&entry)
                .expect("submission queue has room for one batch")
        }
    }

    /// Writes all of `data` at `offset`, split into operations submitted together.
    pub fn write_all_at(&mut self, fd: RawFd, mut data: &[u8], mut offset: u64) -> io::Result<()> {
        while !data.is_empty() {
            let ops: Vec<(usize, usize)> = (0..data.len())
                .step_by(MAX_OP_BYTES)
                .take(DEPTH as usize)
                .map(|start| (start, (data.len() - start).min(MAX_OP_BYTES)))
                .collect();
            for (i, &(start, len)) in ops.iter().enumerate() {
                let entry = opcode::Write::new(types::Fd(fd), data[start..].as_ptr(), len as u32)
                    .offset(offset + start as u64)
                    .build()
                    .user_data(i as u64);
                self.push(entry);
            }
            let results = self.complete(ops.len())?;
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
        let mut done = 0usize;
        while done < len {
            let chunk = (len - done).min(MAX_OP_BYTES);
            // SAFETY: `done + chunk <= len <= staging.len`: the range lies in the buffer.
            let ptr = unsafe { self.staging.ptr.add(done) };
            let entry = opcode::WriteFixed::new(types::Fd(fd), ptr, chunk as u32, 0)
                .offset(offset + done as u64)
                .build()
                .user_data(0);
            self.push(entry);
            let res = self.complete(1)?[0];
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
                .build()
                .user_data(0);
            self.push(entry);
            let res = self.complete(1)?[0];
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
            .build()
            .user_data(0);
        self.push(entry);
        check(self.complete(1)?[0])
    }

    /// Opens (creates) `path` and returns the descriptor; `flags` as for open(2).
    pub fn open(&mut self, path: &Path, flags: i32, mode: u32) -> io::Result<RawFd> {
        let c_path = c_path(path)?;
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c_path.as_ptr())
            .flags(flags | libc::O_CLOEXEC)
            .mode(mode)
            .build()
            .user_data(0);
        self.push(entry);
        let fd = self.complete(1)?[0];
        check(fd)?;
        Ok(fd)
    }

    /// Closes a descriptor opened by [`Uring::open`].
    pub fn close(&mut self, fd: RawFd) -> io::Result<()> {
        self.push(opcode::Close::new(types::Fd(fd)).build().user_data(0));
        check(self.complete(1)?[0])
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
        let (c_temp, c_path) = (c_path(temp)?, c_path(path)?);
        let slot = types::DestinationSlot::try_from_slot_target(CHAIN_SLOT).expect("slot 0");
        let file = types::Fixed(CHAIN_SLOT);
        let mut chain = vec![
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c_temp.as_ptr())
                .flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
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
        if !options.rename {
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
        assert!(len <= self.staging.len && len <= u32::MAX as usize);
        let n = chain.len();
        for (i, entry) in chain.into_iter().enumerate() {
            let entry = entry.user_data(i as u64);
            self.push(if i + 1 < n {
                entry.flags(squeue::Flags::IO_LINK)
            } else {
                entry
            });
        }
        let results = self.complete(n)?;
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
            self.push(opcode::Close::new(file).build().user_data(0));
            let _ = self.complete(1);
        }
        if results[n - 1] < 0 {
            self.push(
                opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), c_temp.as_ptr())
                    .build()
                    .user_data(0),
            );
            let _ = self.complete(1);
        }
        Err(error)
    }
}

impl Uring {
    /// Makes staged files durable and publishes them: each is fdatasynced (all of them
    /// in flight together, so the file system commits its journal once for the lot,
    /// not once per file), then renamed to its final name (without replacing unless
    /// `overwrite`), then `folder` is fsynced so the names survive a power cut too. A
    /// file whose sync or rename fails is removed; its result says why. Results are in
    /// the order of `files`.
    pub fn publish_batch(&mut self, files: &[Staged], overwrite: bool) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(files.len());
        let names: Vec<io::Result<(CString, CString)>> = files
            .iter()
            .map(|f| Ok((c_path(&f.temp)?, c_path(&f.path)?)))
            .collect();
        // 1. fdatasync every file, SYNC_FILES chains (open, fdatasync, close) at a time.
        for (k, chunk) in names.chunks(SYNC_FILES).enumerate() {
            let mut pushed = Vec::new();
            for (i, name) in chunk.iter().enumerate() {
                let Ok((temp, _)) = name else { continue };
                let slot_no = CHAIN_SLOT + 1 + i as u32;
                let slot = types::DestinationSlot::try_from_slot_target(slot_no).expect("slot");
                let file = types::Fixed(slot_no);
                let chain = [
                    opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), temp.as_ptr())
                        .flags(libc::O_WRONLY)
                        .file_index(Some(slot))
                        .build(),
                    opcode::Fsync::new(file)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build(),
                    opcode::Close::new(file).build(),
                ];
                let base = 3 * pushed.len() as u64;
                for (j, entry) in chain.into_iter().enumerate() {
                    let entry = entry.user_data(base + j as u64);
                    self.push(if j < 2 {
                        entry.flags(squeue::Flags::IO_LINK)
                    } else {
                        entry
                    });
                }
                pushed.push(k * SYNC_FILES + i);
            }
            let done = self.complete(3 * pushed.len());
            let mut outcome: Vec<io::Result<()>> = chunk
                .iter()
                .map(|name| match name {
                    Ok(_) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                })
                .collect();
            match done {
                Ok(res) => {
                    for (p, &index) in pushed.iter().enumerate() {
                        let chain = &res[3 * p..3 * p + 3];
                        let failed = chain.iter().find(|&&r| r < 0 && r != -libc::ECANCELED);
                        if let Some(&r) = failed {
                            outcome[index - k * SYNC_FILES] = Err(io::Error::from_raw_os_error(-r));
                        }
                        if chain[0] >= 0 && chain[2] < 0 {
                            // Opened but not closed (the sync failed): close the slot.
                            let file =
                                types::Fixed(CHAIN_SLOT + 1 + (index - k * SYNC_FILES) as u32);
                            self.push(opcode::Close::new(file).build().user_data(0));
                            let _ = self.complete(1);
                        }
                    }
                }
                Err(e) => outcome
                    .iter_mut()
                    .for_each(|o| *o = Err(io::Error::new(e.kind(), e.to_string()))),
            }
            results.extend(outcome);
        }
        // 2. Rename the durable ones (independent operations, submitted together).
        let durable: Vec<usize> = (0..files.len()).filter(|&i| results[i].is_ok()).collect();
        for chunk in durable.chunks(DEPTH as usize) {
            for (j, &i) in chunk.iter().enumerate() {
                let Ok((temp, path)) = &names[i] else {
                    continue;
                };
                self.push(rename(temp, path, overwrite).user_data(j as u64));
            }
            match self.complete(chunk.len()) {
                Ok(res) => {
                    for (&i, &r) in chunk.iter().zip(&res) {
                        if r < 0 {
                            results[i] = Err(io::Error::from_raw_os_error(-r));
                        }
                    }
                }
                Err(e) => {
                    for &i in chunk {
                        results[i] = Err(io::Error::new(e.kind(), e.to_string()));
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
        for (i, r) in results.iter().enumerate() {
            if let (Err(_), Ok((temp, _))) = (r, &names[i]) {
                self.push(
                    opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), temp.as_ptr())
                        .build()
                        .user_data(0),
                );
                let _ = self.complete(1);
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
            .build()
            .user_data(0);
        self.push(entry);
        match self.complete(1) {
            Ok(results) if results[0] < 0 => io::Error::from_raw_os_error(-results[0]),
            Ok(_) => io::Error::from_raw_os_error(libc::ENOSPC),
            Err(e) => e,
        }
    }
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
    fn staged_files_appear_whole_only_when_the_batch_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut uring = Uring::new(4096).unwrap();
        let stage = FileOptions {
            overwrite: false,
            sync: false,
            rename: false,
        };
        let mut files = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            uring.staging_mut(100).unwrap().fill(i as u8 + 1);
            let staged = Staged {
                temp: dir.path().join(format!(".{name}.part")),
                path: dir.path().join(name),
            };
            uring
                .write_file(&staged.temp, &staged.path, 100, stage)
                .unwrap();
            assert!(staged.temp.exists() && !staged.path.exists());
            files.push(staged);
        }
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
