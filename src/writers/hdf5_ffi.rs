//! Everything the HDF5 writer asks of libhdf5, behind a small safe API: library set-up,
//! the io_uring virtual file driver, the in-process bitshuffle-LZ4 filter (id 32008), and
//! the handful of calls that build NXmx files. All `unsafe` of the writers is here.
//!
//! **The io_uring file driver.** libhdf5 stays the format authority: it decides every
//! byte and offset. Its file driver layer (VFL) hands those bytes to a driver; ours
//! (`streamd-uring`, modelled on libhdf5's `sec2`) sends every read and write through
//! the io_uring engine — no `write`/`pwrite` reaches the kernel. A write that is
//! page-aligned in memory, offset and length (every uncompressed frame chunk: ring
//! payloads are page-aligned and the file access list aligns large objects to 4 KiB)
//! goes to a second descriptor opened with O_DIRECT; metadata and compressed chunks go
//! through the page cache. `flush` is an fdatasync: the writer's durability point.
//!
//! The driver's class and file structs mirror `H5FDpublic.h` of libhdf5 1.10 (the
//! hdf5-metno-sys definitions follow other versions); [`init`] refuses any other
//! major.minor with a message naming both.
//!
//! libhdf5 here is the serial build (not thread-safe): every call is made while holding
//! [`lock`], which also keeps unit tests on several threads correct.

use super::bitshuffle;
use crate::uring::{direct_ok, Uring};
use hdf5_sys::h5::{haddr_t, herr_t, hsize_t};
pub use hdf5_sys::h5i::hid_t;
use hdf5_sys::{h5, h5a, h5d, h5e, h5f, h5fd, h5g, h5l, h5p, h5s, h5t, h5z};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// What the driver supports: what `sec2` says of itself in 1.10, SWMR included.
const FEATURES: c_ulong = (h5fd::H5FD_FEAT_AGGREGATE_METADATA
    | h5fd::H5FD_FEAT_ACCUMULATE_METADATA
    | h5fd::H5FD_FEAT_DATA_SIEVE
    | h5fd::H5FD_FEAT_AGGREGATE_SMALLDATA
    | FEAT_SUPPORTS_SWMR_IO
    | FEAT_DEFAULT_VFD_COMPATIBLE) as c_ulong;
const FEAT_SUPPORTS_SWMR_IO: c_uint = 0x0000_1000;
const FEAT_DEFAULT_VFD_COMPATIBLE: c_uint = 0x0000_8000;
/// Largest address: what `sec2` allows with a 64-bit off_t.
const MAX_ADDR: haddr_t = (1 << 63) - 1;
/// H5FD_FLMAP_DICHOTOMY, as `sec2` uses.
const FREE_LIST_MAP: [c_int; 7] = [1, 1, 1, 3, 3, 1, 1];
/// Objects at least this large start on a 4 KiB boundary (frame chunks: O_DIRECT).
const ALIGN_THRESHOLD: hsize_t = 64 << 10;

type Unused = Option<unsafe extern "C" fn()>;

/// `H5FD_class_t` of libhdf5 1.10.
#[repr(C)]
struct DriverClass {
    name: *const c_char,
    maxaddr: haddr_t,
    fc_degree: c_int,
    terminate: Unused,
    sb_size: Unused,
    sb_encode: Unused,
    sb_decode: Unused,
    fapl_size: usize,
    fapl_get: Unused,
    fapl_copy: Unused,
    fapl_free: Unused,
    dxpl_size: usize,
    dxpl_copy: Unused,
    dxpl_free: Unused,
    open: Option<unsafe extern "C" fn(*const c_char, c_uint, hid_t, haddr_t) -> *mut PublicFile>,
    close: Option<unsafe extern "C" fn(*mut PublicFile) -> herr_t>,
    cmp: Option<unsafe extern "C" fn(*const PublicFile, *const PublicFile) -> c_int>,
    query: Option<unsafe extern "C" fn(*const PublicFile, *mut c_ulong) -> herr_t>,
    get_type_map: Unused,
    alloc: Unused,
    free: Unused,
    get_eoa: Option<unsafe extern "C" fn(*const PublicFile, c_int) -> haddr_t>,
    set_eoa: Option<unsafe extern "C" fn(*mut PublicFile, c_int, haddr_t) -> herr_t>,
    get_eof: Option<unsafe extern "C" fn(*const PublicFile, c_int) -> haddr_t>,
    get_handle: Option<unsafe extern "C" fn(*mut PublicFile, hid_t, *mut *mut c_void) -> herr_t>,
    read: Option<
        unsafe extern "C" fn(*mut PublicFile, c_int, hid_t, haddr_t, usize, *mut c_void) -> herr_t,
    >,
    write: Option<
        unsafe extern "C" fn(
            *mut PublicFile,
            c_int,
            hid_t,
            haddr_t,
            usize,
            *const c_void,
        ) -> herr_t,
    >,
    flush: Option<unsafe extern "C" fn(*mut PublicFile, hid_t, bool) -> herr_t>,
    truncate: Option<unsafe extern "C" fn(*mut PublicFile, hid_t, bool) -> herr_t>,
    lock: Option<unsafe extern "C" fn(*mut PublicFile, bool) -> herr_t>,
    unlock: Option<unsafe extern "C" fn(*mut PublicFile) -> herr_t>,
    fl_map: [c_int; 7],
}

/// `H5FD_t` of libhdf5 1.10: the public part libhdf5 fills in after `open`.
#[repr(C)]
struct PublicFile {
    driver_id: hid_t,
    cls: *const DriverClass,
    fileno: c_ulong,
    access_flags: c_uint,
    feature_flags: c_ulong,
    maxaddr: haddr_t,
    base_addr: haddr_t,
    threshold: hsize_t,
    alignment: hsize_t,
    paged_aggr: bool,
}

/// One open file of the driver; `public` first, so a `*mut PublicFile` is a `*mut UringFile`.
#[repr(C)]
struct UringFile {
    public: PublicFile,
    fd: c_int,
    /// The same file opened with O_DIRECT (-1: read-only, or unsupported here).
    direct_fd: c_int,
    eoa: haddr_t,
    eof: haddr_t,
    device: u64,
    inode: u64,
    uring: Uring,
}

thread_local! {
    /// The system error behind the last failed driver call. A C callback can only return
    /// -1 to libhdf5; the failed call's check (`failure`) takes the error from here into
    /// the [`H5Error`] it returns, so it never outlives the failure it explains.
    static LAST_IO_ERROR: RefCell<Option<io::Error>> = const { RefCell::new(None) };
}

fn failed(e: io::Error) -> herr_t {
    LAST_IO_ERROR.with(|last| *last.borrow_mut() = Some(e));
    -1
}

/// Why a libhdf5 call failed. Displays as the sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum H5Error {
    /// libhdf5 could not be set up: its version, the file driver, the filter.
    #[error("{0}")]
    Setup(String),
    /// `what` failed because a system call of the file driver did (a full disk, no
    /// permission): its error, which a writer classifies.
    #[error("{what}: {io}")]
    Io { what: String, io: io::Error },
    /// libhdf5 refused `what` with no system error behind it.
    #[error("{what} (libhdf5 refused it)")]
    Refused { what: String },
}

impl H5Error {
    /// The system error behind the failure, or one that carries the sentence.
    pub fn into_io(self) -> io::Error {
        match self {
            H5Error::Io { io, .. } => io,
            other => io::Error::other(other.to_string()),
        }
    }
}

impl From<H5Error> for String {
    /// The sentence, for messages that only report it.
    fn from(e: H5Error) -> String {
        e.to_string()
    }
}

unsafe extern "C" fn drv_open(
    name: *const c_char,
    flags: c_uint,
    _fapl: hid_t,
    maxaddr: haddr_t,
) -> *mut PublicFile {
    // SAFETY: libhdf5 passes a NUL-terminated file name.
    let name = unsafe { std::ffi::CStr::from_ptr(name) };
    let path = Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()));
    if maxaddr == 0 || maxaddr > MAX_ADDR {
        failed(io::Error::from_raw_os_error(libc::EINVAL));
        return std::ptr::null_mut();
    }
    let writable = flags & h5f::H5F_ACC_RDWR != 0;
    let mut o_flags = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    if flags & h5f::H5F_ACC_TRUNC != 0 {
        o_flags |= libc::O_TRUNC;
    }
    if flags & h5f::H5F_ACC_CREAT != 0 {
        o_flags |= libc::O_CREAT;
    }
    if flags & h5f::H5F_ACC_EXCL != 0 {
        o_flags |= libc::O_EXCL;
    }
    let opened = (|| -> io::Result<Box<UringFile>> {
        let mut uring = Uring::new(crate::uring::DIRECT_ALIGN)?;
        let fd = uring.open(path, o_flags, 0o644)?;
        let direct_fd = if writable {
            uring
                .open(path, libc::O_WRONLY | libc::O_DIRECT, 0)
                .unwrap_or(-1)
        } else {
            -1
        };
        let meta = std::fs::metadata(path)?;
        Ok(Box::new(UringFile {
            // SAFETY: PublicFile is plain integers and pointers; libhdf5 fills it in.
            public: unsafe { std::mem::zeroed() },
            fd,
            direct_fd,
            eoa: 0,
            eof: meta.len(),
            device: meta.dev(),
            inode: meta.ino(),
            uring,
        }))
    })();
    match opened {
        Ok(file) => Box::into_raw(file).cast(),
        Err(e) => {
            failed(e);
            std::ptr::null_mut()
        }
    }
}

/// The driver's file behind libhdf5's pointer.
///
/// # Safety
/// `file` must come from `drv_open` and not be closed; libhdf5 calls a file's callbacks
/// one at a time (serial library, and [`lock`] is held), so no other reference exists.
unsafe fn file_mut<'a>(file: *mut PublicFile) -> &'a mut UringFile {
    // SAFETY: per the function's contract; `public` is the first field of a repr(C)
    // UringFile allocated by drv_open.
    unsafe { &mut *file.cast::<UringFile>() }
}

unsafe extern "C" fn drv_close(file: *mut PublicFile) -> herr_t {
    // SAFETY: allocated by drv_open with Box::into_raw; libhdf5 closes a file once.
    let mut file = unsafe { Box::from_raw(file.cast::<UringFile>()) };
    let direct = file.direct_fd;
    if direct >= 0 {
        let _ = file.uring.close(direct);
    }
    let fd = file.fd;
    match file.uring.close(fd) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

unsafe extern "C" fn drv_cmp(a: *const PublicFile, b: *const PublicFile) -> c_int {
    // SAFETY: both come from drv_open (libhdf5 compares files of this driver only).
    let (a, b) = unsafe { (&*a.cast::<UringFile>(), &*b.cast::<UringFile>()) };
    match (a.device, a.inode).cmp(&(b.device, b.inode)) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

unsafe extern "C" fn drv_query(_file: *const PublicFile, flags: *mut c_ulong) -> herr_t {
    if !flags.is_null() {
        // SAFETY: libhdf5 passes a valid out pointer.
        unsafe { *flags = FEATURES };
    }
    0
}

unsafe extern "C" fn drv_get_eoa(file: *const PublicFile, _type: c_int) -> haddr_t {
    // SAFETY: from drv_open, see `file_mut`.
    unsafe { (*file.cast::<UringFile>()).eoa }
}

unsafe extern "C" fn drv_set_eoa(file: *mut PublicFile, _type: c_int, addr: haddr_t) -> herr_t {
    // SAFETY: see `file_mut`.
    unsafe { file_mut(file) }.eoa = addr;
    0
}

unsafe extern "C" fn drv_get_eof(file: *const PublicFile, _type: c_int) -> haddr_t {
    // SAFETY: from drv_open, see `file_mut`.
    unsafe { (*file.cast::<UringFile>()).eof }
}

unsafe extern "C" fn drv_get_handle(
    file: *mut PublicFile,
    _fapl: hid_t,
    handle: *mut *mut c_void,
) -> herr_t {
    // SAFETY: see `file_mut`; `handle` is libhdf5's out pointer.
    unsafe {
        let file = file_mut(file);
        *handle = (&mut file.fd as *mut c_int).cast();
    }
    0
}

unsafe extern "C" fn drv_read(
    file: *mut PublicFile,
    _type: c_int,
    _dxpl: hid_t,
    addr: haddr_t,
    size: usize,
    buf: *mut c_void,
) -> herr_t {
    // SAFETY: see `file_mut`; libhdf5 hands a buffer of `size` writable bytes.
    let (file, buf) = unsafe {
        (
            file_mut(file),
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), size),
        )
    };
    let fd = file.fd;
    match file.uring.read_at(fd, buf, addr) {
        Ok(n) => {
            // Past the end of the file reads as zeros (as in sec2).
            buf[n..].fill(0);
            0
        }
        Err(e) => failed(e),
    }
}

unsafe extern "C" fn drv_write(
    file: *mut PublicFile,
    _type: c_int,
    _dxpl: hid_t,
    addr: haddr_t,
    size: usize,
    buf: *const c_void,
) -> herr_t {
    // SAFETY: see `file_mut`; libhdf5 hands `size` readable bytes.
    let (file, data) = unsafe {
        (
            file_mut(file),
            std::slice::from_raw_parts(buf.cast::<u8>(), size),
        )
    };
    if addr
        .checked_add(size as u64)
        .is_none_or(|end| end > file.eoa)
    {
        return failed(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let fd = if file.direct_fd >= 0 && direct_ok(data, addr) {
        file.direct_fd
    } else {
        file.fd
    };
    match file.uring.write_all_at(fd, data, addr) {
        Ok(()) => {
            file.eof = file.eof.max(addr + size as u64);
            0
        }
        Err(e) => failed(e),
    }
}

unsafe extern "C" fn drv_flush(file: *mut PublicFile, _dxpl: hid_t, _closing: bool) -> herr_t {
    // SAFETY: see `file_mut`.
    let file = unsafe { file_mut(file) };
    if file.direct_fd < 0 {
        return 0;
    }
    let fd = file.fd;
    match file.uring.datasync(fd) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

unsafe extern "C" fn drv_truncate(file: *mut PublicFile, _dxpl: hid_t, _closing: bool) -> herr_t {
    // SAFETY: see `file_mut`.
    let file = unsafe { file_mut(file) };
    if file.eoa == file.eof {
        return 0;
    }
    // SAFETY: plain system call on our own descriptor.
    if unsafe { libc::ftruncate(file.fd, file.eoa as libc::off_t) } != 0 {
        return failed(io::Error::last_os_error());
    }
    file.eof = file.eoa;
    0
}

unsafe extern "C" fn drv_lock(file: *mut PublicFile, rw: bool) -> herr_t {
    // SAFETY: see `file_mut`.
    let file = unsafe { file_mut(file) };
    let op = if rw { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
    // SAFETY: plain system call on our own descriptor.
    if unsafe { libc::flock(file.fd, op) } != 0 {
        let e = io::Error::last_os_error();
        // As sec2: a filesystem without locks is not an error.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return failed(e);
        }
    }
    0
}

unsafe extern "C" fn drv_unlock(file: *mut PublicFile) -> herr_t {
    // SAFETY: see `file_mut`.
    let file = unsafe { file_mut(file) };
    // SAFETY: plain system call on our own descriptor.
    if unsafe { libc::flock(file.fd, libc::LOCK_UN) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return failed(e);
        }
    }
    0
}

/// The bitshuffle-LZ4 filter for libhdf5's pipeline (used when reading back in tests
/// and by non-direct writes; frame chunks are compressed by the writer itself).
unsafe extern "C" fn bitshuffle_filter(
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
) -> usize {
    if cd_nelmts < 3 {
        return 0;
    }
    // SAFETY: libhdf5 passes cd_nelmts values, and a malloc'd buffer of `nbytes` valid
    // bytes in *buf that we may replace with another malloc'd buffer.
    unsafe {
        let elem_size = *cd_values.add(2) as usize;
        let input = std::slice::from_raw_parts((*buf).cast::<u8>(), nbytes);
        let output = if flags & h5z::H5Z_FLAG_REVERSE != 0 {
            match bitshuffle::decompress(input, elem_size) {
                Ok(out) => out,
                Err(_) => return 0,
            }
        } else {
            if elem_size == 0 || nbytes % elem_size != 0 {
                return 0;
            }
            let mut out = vec![0u8; bitshuffle::max_compressed_len(nbytes, elem_size)];
            let len = bitshuffle::compress(input, elem_size, &mut out, &mut Vec::new());
            out.truncate(len);
            out
        };
        let fresh = libc::malloc(output.len().max(1)).cast::<u8>();
        if fresh.is_null() {
            return 0;
        }
        std::ptr::copy_nonoverlapping(output.as_ptr(), fresh, output.len());
        libc::free(*buf);
        *buf = fresh.cast();
        *buf_size = output.len();
        output.len()
    }
}

struct Library {
    driver: hid_t,
}

static LIBRARY: OnceLock<Result<Library, String>> = OnceLock::new();
static CALLS: Mutex<()> = Mutex::new(());

/// Serialises calls into libhdf5 (a serial build).
pub fn lock() -> MutexGuard<'static, ()> {
    CALLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets libhdf5 up once: checks its version, silences its error printing (errors come
/// back as messages), registers the io_uring driver and the bitshuffle filter.
pub fn init() -> Result<(), H5Error> {
    let library = LIBRARY.get_or_init(set_up);
    library
        .as_ref()
        .map(|_| ())
        .map_err(|reason| H5Error::Setup(reason.clone()))
}

/// Checks libhdf5's version and registers the driver and the filter (once).
fn set_up() -> Result<Library, String> {
    let _guard = lock();
    let (mut major, mut minor, mut release) = (0, 0, 0);
    // SAFETY: plain library calls with valid out pointers.
    unsafe {
        if h5::H5open() < 0 {
            return Err("libhdf5 could not be initialised".to_string());
        }
        h5::H5get_libversion(&mut major, &mut minor, &mut release);
    }
    if (major, minor) != (1, 10) {
        return Err(format!(
            "the hdf5 writer supports libhdf5 1.10 only (its io_uring file driver follows that version's driver structure) but streamd is linked with {major}.{minor}.{release}; build it against libhdf5 1.10 (Debian 12's libhdf5-dev) or use the raw writer"
        ));
    }
    // SAFETY: turning off libhdf5's automatic error printing for all stacks.
    unsafe { h5e::H5Eset_auto2(h5e::H5E_DEFAULT, None, std::ptr::null_mut()) };
    let class = Box::leak(Box::new(DriverClass {
        name: c"streamd-uring".as_ptr(),
        maxaddr: MAX_ADDR,
        fc_degree: 1, // H5F_CLOSE_WEAK
        terminate: None,
        sb_size: None,
        sb_encode: None,
        sb_decode: None,
        fapl_size: 0,
        fapl_get: None,
        fapl_copy: None,
        fapl_free: None,
        dxpl_size: 0,
        dxpl_copy: None,
        dxpl_free: None,
        open: Some(drv_open),
        close: Some(drv_close),
        cmp: Some(drv_cmp),
        query: Some(drv_query),
        get_type_map: None,
        alloc: None,
        free: None,
        get_eoa: Some(drv_get_eoa),
        set_eoa: Some(drv_set_eoa),
        get_eof: Some(drv_get_eof),
        get_handle: Some(drv_get_handle),
        read: Some(drv_read),
        write: Some(drv_write),
        flush: Some(drv_flush),
        truncate: Some(drv_truncate),
        lock: Some(drv_lock),
        unlock: Some(drv_unlock),
        fl_map: FREE_LIST_MAP,
    }));
    // SAFETY: the class is leaked ('static) and laid out as libhdf5 1.10's
    // H5FD_class_t (checked version above).
    let driver = unsafe { h5fd::H5FDregister((class as *const DriverClass).cast()) };
    if driver < 0 {
        return Err("libhdf5 refused the io_uring file driver".into());
    }
    let filter = Box::leak(Box::new(h5z::H5Z_class2_t {
        version: 1, // H5Z_CLASS_T_VERS
        id: bitshuffle::FILTER_ID as h5z::H5Z_filter_t,
        encoder_present: 1,
        decoder_present: 1,
        name: c"bitshuffle; see https://github.com/kiyo-masui/bitshuffle".as_ptr(),
        can_apply: None,
        set_local: None,
        filter: Some(bitshuffle_filter),
    }));
    // SAFETY: a leaked, fully initialised H5Z_class2_t.
    if unsafe { h5z::H5Zregister((filter as *const h5z::H5Z_class2_t).cast()) } < 0 {
        return Err("libhdf5 refused the bitshuffle filter".into());
    }
    Ok(Library { driver })
}

fn driver() -> hid_t {
    LIBRARY
        .get()
        .and_then(|l| l.as_ref().ok())
        .expect("init() succeeded")
        .driver
}

/// An open libhdf5 object, closed on drop.
pub struct Handle {
    id: hid_t,
    close: unsafe extern "C" fn(hid_t) -> herr_t,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `id` is a live identifier of the kind `close` closes.
        unsafe { (self.close)(self.id) };
    }
}

fn check_id(id: hid_t, what: &str) -> Result<hid_t, H5Error> {
    if id < 0 {
        Err(failure(what))
    } else {
        Ok(id)
    }
}

fn check(status: herr_t, what: &str) -> Result<(), H5Error> {
    if status < 0 {
        Err(failure(what))
    } else {
        Ok(())
    }
}

/// The error of a failed call: with the system error the driver saw, if any.
fn failure(what: &str) -> H5Error {
    let what = what.to_string();
    match LAST_IO_ERROR.with(|last| last.borrow_mut().take()) {
        Some(io) => H5Error::Io { what, io },
        None => H5Error::Refused { what },
    }
}

fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).expect("no NUL")
}

/// Element types the writer stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Element {
    /// Little-endian types on disk; `init` has run, so libhdf5's type globals are set.
    fn file_type(self) -> hid_t {
        match self {
            Element::U8 => *h5t::H5T_STD_U8LE,
            Element::U16 => *h5t::H5T_STD_U16LE,
            Element::U32 => *h5t::H5T_STD_U32LE,
            Element::U64 => *h5t::H5T_STD_U64LE,
            Element::I8 => *h5t::H5T_STD_I8LE,
            Element::I16 => *h5t::H5T_STD_I16LE,
            Element::I32 => *h5t::H5T_STD_I32LE,
            Element::I64 => *h5t::H5T_STD_I64LE,
            Element::F32 => *h5t::H5T_IEEE_F32LE,
            Element::F64 => *h5t::H5T_IEEE_F64LE,
        }
    }

    fn memory_type(self) -> hid_t {
        match self {
            Element::U8 => *h5t::H5T_NATIVE_UINT8,
            Element::U16 => *h5t::H5T_NATIVE_UINT16,
            Element::U32 => *h5t::H5T_NATIVE_UINT32,
            Element::U64 => *h5t::H5T_NATIVE_UINT64,
            Element::I8 => *h5t::H5T_NATIVE_INT8,
            Element::I16 => *h5t::H5T_NATIVE_INT16,
            Element::I32 => *h5t::H5T_NATIVE_INT32,
            Element::I64 => *h5t::H5T_NATIVE_INT64,
            Element::F32 => *h5t::H5T_NATIVE_FLOAT,
            Element::F64 => *h5t::H5T_NATIVE_DOUBLE,
        }
    }

    fn types(self) -> (hid_t, hid_t) {
        (self.file_type(), self.memory_type())
    }

    pub fn size(self) -> usize {
        match self {
            Element::U8 | Element::I8 => 1,
            Element::U16 | Element::I16 => 2,
            Element::U32 | Element::I32 | Element::F32 => 4,
            Element::U64 | Element::I64 | Element::F64 => 8,
        }
    }
}

extern "C" {
    /// libhdf5 1.10 (`H5Fpublic.h`), what `h5clear --increment` calls: sets the file's
    /// EOA to the maximum of its EOA and EOF, plus `increment`.
    fn H5Fincrement_filesize(file_id: hid_t, increment: hsize_t) -> herr_t;
}

/// An HDF5 file opened through the io_uring driver.
pub struct File {
    handle: Handle,
}

/// How to open a [`File`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new file; an existing one is an error (EEXIST) unless `overwrite`.
    Create { overwrite: bool },
    /// An existing file, read-only.
    Read,
    /// An existing file, read-write, clearing the "open for write" flags a killed SWMR
    /// writer leaves (what `h5clear -s` does), so that readers can open it again, and
    /// taking every byte the file holds as allocated (what `h5clear --increment=0`
    /// does): a SWMR writer writes its superblock, with the end of allocation (EOA),
    /// only in `H5Fflush`, after the frame chunks and the datasets that name them. One
    /// killed between the two leaves a file whose ids name chunks past the stored EOA;
    /// taken as it is, libhdf5 would allocate over those chunks and cut them off at
    /// close (a later read: "addr overflow, addr = …, eoa = …"). One killed after the
    /// superblock but before the file was extended to it leaves a file shorter than
    /// its EOA, which libhdf5 refuses to open ("truncated file").
    Recover,
}

impl File {
    pub fn open(path: &Path, mode: Mode) -> Result<File, H5Error> {
        init()?;
        let name = c_string(&path.to_string_lossy());
        let what = format!("could not open {}", path.display());
        // SAFETY: property-list calls on a fresh list; `name` outlives the calls.
        unsafe {
            let fapl = Handle {
                id: check_id(h5p::H5Pcreate(*h5p::H5P_CLS_FILE_ACCESS), &what)?,
                close: h5p::H5Pclose,
            };
            check(
                h5p::H5Pset_driver(fapl.id, driver(), std::ptr::null()),
                &what,
            )?;
            check(
                h5p::H5Pset_libver_bounds(fapl.id, h5f::H5F_LIBVER_LATEST, h5f::H5F_LIBVER_LATEST),
                &what,
            )?;
            check(
                h5p::H5Pset_alignment(
                    fapl.id,
                    ALIGN_THRESHOLD,
                    crate::uring::DIRECT_ALIGN as hsize_t,
                ),
                &what,
            )?;
            let id = match mode {
                Mode::Create { overwrite } => {
                    let flags = if overwrite {
                        h5f::H5F_ACC_TRUNC
                    } else {
                        h5f::H5F_ACC_EXCL
                    };
                    h5f::H5Fcreate(name.as_ptr(), flags, h5p::H5P_DEFAULT, fapl.id)
                }
                Mode::Read => h5f::H5Fopen(name.as_ptr(), h5f::H5F_ACC_RDONLY, fapl.id),
                Mode::Recover => {
                    // The file-access properties h5clear sets (-s, and --increment's
                    // EOF check); libhdf5 1.10 registers them.
                    for property in [c"clear_status_flags", c"skip_eof_check"] {
                        let mut on: h5::hbool_t = 1 as _;
                        check(
                            h5p::H5Pset(
                                fapl.id,
                                property.as_ptr(),
                                (&mut on as *mut h5::hbool_t).cast(),
                            ),
                            &what,
                        )?;
                    }
                    h5f::H5Fopen(name.as_ptr(), h5f::H5F_ACC_RDWR, fapl.id)
                }
            };
            let file = File {
                handle: Handle {
                    id: check_id(id, &what)?,
                    close: h5f::H5Fclose,
                },
            };
            if mode == Mode::Recover {
                // EOA = max(EOA, EOF) before anything is allocated; the superblock,
                // dirty from the cleared flags, stores it at close.
                check(H5Fincrement_filesize(file.handle.id, 0), &what)?;
            }
            Ok(file)
        }
    }

    pub fn root(&self) -> hid_t {
        self.handle.id
    }

    /// From here on a reader may follow the file (no new objects may be created).
    pub fn start_swmr(&self) -> Result<(), H5Error> {
        // SAFETY: a live file identifier.
        let status = unsafe { h5f::H5Fstart_swmr_write(self.handle.id) };
        check(status, "could not start SWMR writing")
    }

    /// Writes what libhdf5 caches and fdatasyncs the file.
    pub fn flush(&self) -> Result<(), H5Error> {
        // SAFETY: a live file identifier.
        let status = unsafe { h5f::H5Fflush(self.handle.id, h5f::H5F_scope_t::H5F_SCOPE_LOCAL) };
        check(status, "could not flush")
    }

    /// Closes the file, reporting a failure (dropping closes too, silently).
    pub fn close(self) -> Result<(), H5Error> {
        let id = self.handle.id;
        std::mem::forget(self);
        // SAFETY: a live file identifier, closed once (the Drop was skipped).
        check(unsafe { h5f::H5Fclose(id) }, "could not close")
    }
}

/// Creates group `name` in `parent` with its `NX_class` attribute.
pub fn group(parent: hid_t, name: &str, nx_class: &str) -> Result<Handle, H5Error> {
    let c_name = c_string(name);
    let what = format!("could not create group {name}");
    // SAFETY: a live parent identifier; `c_name` outlives the call.
    let id = unsafe {
        h5g::H5Gcreate2(
            parent,
            c_name.as_ptr(),
            h5p::H5P_DEFAULT,
            h5p::H5P_DEFAULT,
            h5p::H5P_DEFAULT,
        )
    };
    let group = Handle {
        id: check_id(id, &what)?,
        close: h5g::H5Gclose,
    };
    string_attribute(group.id, "NX_class", nx_class)?;
    Ok(group)
}

fn string_type(text: &str) -> Result<Handle, H5Error> {
    // SAFETY: copying a predefined type and sizing the copy.
    unsafe {
        let t = Handle {
            id: check_id(h5t::H5Tcopy(*h5t::H5T_C_S1), "could not make a string type")?,
            close: h5t::H5Tclose,
        };
        check(h5t::H5Tset_size(t.id, text.len().max(1)), "string type")?;
        Ok(t)
    }
}

fn scalar_space() -> Result<Handle, H5Error> {
    // SAFETY: plain constructor.
    let id = unsafe { h5s::H5Screate(h5s::H5S_class_t::H5S_SCALAR) };
    Ok(Handle {
        id: check_id(id, "could not make a dataspace")?,
        close: h5s::H5Sclose,
    })
}

/// A fixed-length string attribute (how NeXus tools expect `NX_class`, `units`).
pub fn string_attribute(object: hid_t, name: &str, value: &str) -> Result<(), H5Error> {
    let text = c_string(value);
    let t = string_type(value)?;
    // The type is sized to the text (at least 1 byte): the bytes with the NUL hold it.
    typed_attribute(
        object,
        name,
        (t.id, t.id),
        &scalar_space()?,
        text.as_bytes_with_nul(),
    )
}

/// An attribute of `space` whose (file, memory) types are `types`, written from `bytes`.
fn typed_attribute(
    object: hid_t,
    name: &str,
    (file_type, memory_type): (hid_t, hid_t),
    space: &Handle,
    bytes: &[u8],
) -> Result<(), H5Error> {
    let c_name = c_string(name);
    let what = format!("could not write attribute {name}");
    // SAFETY: live identifiers; `bytes` holds every element of the dataspace in the
    // memory type.
    unsafe {
        let attr = Handle {
            id: check_id(
                h5a::H5Acreate2(
                    object,
                    c_name.as_ptr(),
                    file_type,
                    space.id,
                    h5p::H5P_DEFAULT,
                    h5p::H5P_DEFAULT,
                ),
                &what,
            )?,
            close: h5a::H5Aclose,
        };
        check(
            h5a::H5Awrite(attr.id, memory_type, bytes.as_ptr().cast()),
            &what,
        )
    }
}

/// A scalar string dataset (`definition`, `description`, ...).
pub fn string_dataset(parent: hid_t, name: &str, value: &str) -> Result<(), H5Error> {
    let text = c_string(value);
    let t = string_type(value)?;
    // The type is sized to the text (at least 1 byte): the bytes with the NUL hold it.
    typed_dataset(
        parent,
        name,
        (t.id, t.id),
        &scalar_space()?,
        text.as_bytes_with_nul(),
        "",
    )?;
    Ok(())
}

/// A scalar f64 dataset with a `units` attribute (none when empty).
pub fn number_dataset(
    parent: hid_t,
    name: &str,
    value: f64,
    units: &str,
) -> Result<Handle, H5Error> {
    scalar_dataset(parent, name, Element::F64, &value.to_le_bytes(), units)
}

/// An extendible dataset of `item` shaped items (shape `(0, item...)`, growing along
/// the first axis), chunked `chunk_items` items at a time, optionally bitshuffle-LZ4.
pub struct Growing {
    handle: Handle,
    element: Element,
    item: Vec<hsize_t>,
    pub len: u64,
}

impl Growing {
    pub fn create(
        parent: hid_t,
        name: &str,
        element: Element,
        item: &[u64],
        chunk_items: u64,
        bitshuffle_lz4: bool,
    ) -> Result<Growing, H5Error> {
        let c_name = c_string(name);
        let what = format!("could not create dataset {name}");
        let rank = item.len() + 1;
        let dims: Vec<hsize_t> = std::iter::once(0).chain(item.iter().copied()).collect();
        let max: Vec<hsize_t> = std::iter::once(h5s::H5S_UNLIMITED)
            .chain(item.iter().copied())
            .collect();
        let chunk: Vec<hsize_t> = std::iter::once(chunk_items)
            .chain(item.iter().copied())
            .collect();
        // SAFETY: live identifiers; the dims vectors hold `rank` values each.
        unsafe {
            let space = Handle {
                id: check_id(
                    h5s::H5Screate_simple(rank as c_int, dims.as_ptr(), max.as_ptr()),
                    &what,
                )?,
                close: h5s::H5Sclose,
            };
            let dcpl = Handle {
                id: check_id(h5p::H5Pcreate(*h5p::H5P_CLS_DATASET_CREATE), &what)?,
                close: h5p::H5Pclose,
            };
            check(
                h5p::H5Pset_chunk(dcpl.id, rank as c_int, chunk.as_ptr()),
                &what,
            )?;
            if bitshuffle_lz4 {
                let cd: [c_uint; 5] = [0, 0, element.size() as c_uint, 0, bitshuffle::LZ4];
                check(
                    h5p::H5Pset_filter(
                        dcpl.id,
                        bitshuffle::FILTER_ID as h5z::H5Z_filter_t,
                        h5z::H5Z_FLAG_MANDATORY,
                        cd.len(),
                        cd.as_ptr(),
                    ),
                    &what,
                )?;
            }
            let id = h5d::H5Dcreate2(
                parent,
                c_name.as_ptr(),
                element.file_type(),
                space.id,
                h5p::H5P_DEFAULT,
                dcpl.id,
                h5p::H5P_DEFAULT,
            );
            Ok(Growing {
                handle: Handle {
                    id: check_id(id, &what)?,
                    close: h5d::H5Dclose,
                },
                element,
                item: item.to_vec(),
                len: 0,
            })
        }
    }

    pub fn id(&self) -> hid_t {
        self.handle.id
    }

    fn extend(&mut self, len: u64) -> Result<(), H5Error> {
        let dims: Vec<hsize_t> = std::iter::once(len)
            .chain(self.item.iter().copied())
            .collect();
        // SAFETY: a live dataset; `dims` holds its rank.
        let status = unsafe { h5d::H5Dset_extent(self.handle.id, dims.as_ptr()) };
        check(status, "could not extend a dataset")?;
        self.len = len;
        Ok(())
    }

    /// Appends one item as a ready chunk (one item per chunk), stored as given: raw
    /// bytes, or bitshuffle-LZ4 bytes for a compressed dataset.
    pub fn append_chunk(&mut self, chunk: &[u8]) -> Result<(), H5Error> {
        let index = self.len;
        self.extend(index + 1)?;
        let offset: Vec<hsize_t> = std::iter::once(index)
            .chain(self.item.iter().map(|_| 0))
            .collect();
        // SAFETY: a live dataset; `offset` holds its rank; `chunk` is readable.
        let status = unsafe {
            h5d::H5Dwrite_chunk(
                self.handle.id,
                h5p::H5P_DEFAULT,
                0,
                offset.as_ptr(),
                chunk.len(),
                chunk.as_ptr().cast(),
            )
        };
        let written = check(status, "could not write a frame chunk");
        if written.is_err() {
            // The extent counts only frames that are there (a full disk, say).
            let _ = self.extend(index);
        }
        written
    }

    /// Appends values to a 1-D dataset of this element type (given as raw LE bytes).
    pub fn append_values(&mut self, bytes: &[u8]) -> Result<(), H5Error> {
        let count = (bytes.len() / self.element.size()) as u64;
        if count == 0 {
            return Ok(());
        }
        let start = self.len;
        self.extend(start + count)?;
        let what = "could not append values";
        // SAFETY: live identifiers; the selection covers `count` elements, which
        // `bytes` holds.
        unsafe {
            let file_space = Handle {
                id: check_id(h5d::H5Dget_space(self.handle.id), what)?,
                close: h5s::H5Sclose,
            };
            check(
                h5s::H5Sselect_hyperslab(
                    file_space.id,
                    h5s::H5S_seloper_t::H5S_SELECT_SET,
                    &start,
                    std::ptr::null(),
                    &count,
                    std::ptr::null(),
                ),
                what,
            )?;
            let memory_space = Handle {
                id: check_id(h5s::H5Screate_simple(1, &count, std::ptr::null()), what)?,
                close: h5s::H5Sclose,
            };
            check(
                h5d::H5Dwrite(
                    self.handle.id,
                    self.element.memory_type(),
                    memory_space.id,
                    file_space.id,
                    h5p::H5P_DEFAULT,
                    bytes.as_ptr().cast(),
                ),
                what,
            )
        }
    }

    /// Makes what was appended visible to SWMR readers.
    pub fn flush(&self) -> Result<(), H5Error> {
        // SAFETY: a live dataset.
        let status = unsafe { h5d::H5Dflush(self.handle.id) };
        check(status, "could not flush a dataset")
    }
}

/// Opens group `path` (e.g. `/entry/data`) of an open file.
pub fn open_group(file: &File, path: &str) -> Result<Handle, H5Error> {
    let c_path = c_string(path);
    // SAFETY: a live file; the string outlives the call.
    let id = unsafe { h5g::H5Gopen2(file.root(), c_path.as_ptr(), h5p::H5P_DEFAULT) };
    Ok(Handle {
        id: check_id(id, &format!("could not open group {path}"))?,
        close: h5g::H5Gclose,
    })
}

impl Handle {
    pub fn id(&self) -> hid_t {
        self.id
    }
}

/// An existing dataset, opened to read it back or trim it (recovery, the master file).
pub struct Dataset {
    handle: Handle,
}

/// Opens dataset `path` of an open file; `None` when there is none.
pub fn open_dataset(file: &File, path: &str) -> Option<Dataset> {
    let c_path = c_string(path);
    // SAFETY: a live file; the string outlives the call. A missing path fails quietly
    // (automatic error printing is off).
    let id = unsafe { h5d::H5Dopen2(file.root(), c_path.as_ptr(), h5p::H5P_DEFAULT) };
    (id >= 0).then(|| Dataset {
        handle: Handle {
            id,
            close: h5d::H5Dclose,
        },
    })
}

impl Dataset {
    /// The current extent, one value per axis.
    pub fn dims(&self) -> Result<Vec<u64>, H5Error> {
        let what = "could not read a dataset's shape";
        // SAFETY: a live dataset; `dims` has room for the rank libhdf5 reports.
        unsafe {
            let space = Handle {
                id: check_id(h5d::H5Dget_space(self.handle.id), what)?,
                close: h5s::H5Sclose,
            };
            let rank = h5s::H5Sget_simple_extent_ndims(space.id);
            if rank < 0 {
                return Err(failure(what));
            }
            let mut dims = vec![0 as hsize_t; rank as usize];
            check(
                h5s::H5Sget_simple_extent_dims(space.id, dims.as_mut_ptr(), std::ptr::null_mut()),
                what,
            )?;
            Ok(dims)
        }
    }

    /// Reads a whole 1-D dataset as `element` values (converted by libhdf5).
    pub fn read(&self, element: Element) -> Result<Vec<u8>, H5Error> {
        let len = self.dims()?.iter().product::<u64>() as usize;
        let mut bytes = vec![0u8; len * element.size()];
        if len == 0 {
            return Ok(bytes);
        }
        // SAFETY: a live dataset; `bytes` holds every element in the memory type.
        let status = unsafe {
            h5d::H5Dread(
                self.handle.id,
                element.memory_type(),
                h5s::H5S_ALL,
                h5s::H5S_ALL,
                h5p::H5P_DEFAULT,
                bytes.as_mut_ptr().cast(),
            )
        };
        check(status, "could not read a dataset")?;
        Ok(bytes)
    }

    /// Sets the length of the first axis (the frame axis), keeping the others.
    pub fn set_len(&self, len: u64) -> Result<(), H5Error> {
        let mut dims = self.dims()?;
        if dims.is_empty() {
            return Ok(());
        }
        dims[0] = len;
        // SAFETY: a live dataset; `dims` holds its rank.
        let status = unsafe { h5d::H5Dset_extent(self.handle.id, dims.as_ptr()) };
        check(status, "could not trim a dataset")
    }

    /// The dataset's type as stored (for a virtual dataset over it).
    pub fn file_type(&self) -> Result<Handle, H5Error> {
        // SAFETY: a live dataset.
        let id = unsafe { h5d::H5Dget_type(self.handle.id) };
        Ok(Handle {
            id: check_id(id, "could not read a dataset's type")?,
            close: h5t::H5Tclose,
        })
    }
}

/// The names of the links in group `path` of an open file (empty when it is absent).
pub fn link_names(file: &File, path: &str) -> Vec<String> {
    let Ok(group) = open_group(file, path) else {
        return Vec::new();
    };
    // SAFETY: a live group; H5G_info_t is plain data libhdf5 fills in.
    let mut info: h5g::H5G_info_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { h5g::H5Gget_info(group.id, &mut info) } < 0 {
        return Vec::new();
    }
    (0..info.nlinks)
        .filter_map(|n| {
            let mut name = [0u8; 256];
            // SAFETY: a live group; the buffer holds `name.len()` bytes and libhdf5
            // NUL-terminates what it writes.
            let len = unsafe {
                h5l::H5Lget_name_by_idx(
                    group.id,
                    c".".as_ptr(),
                    h5::H5_index_t::H5_INDEX_NAME,
                    h5::H5_iter_order_t::H5_ITER_INC,
                    n,
                    name.as_mut_ptr().cast(),
                    name.len(),
                    h5p::H5P_DEFAULT,
                )
            };
            (len > 0 && (len as usize) < name.len())
                .then(|| String::from_utf8_lossy(&name[..len as usize]).into_owned())
        })
        .collect()
}

fn simple_space(dims: &[u64]) -> Result<Handle, H5Error> {
    // SAFETY: `dims` holds `dims.len()` values.
    let id = unsafe { h5s::H5Screate_simple(dims.len() as c_int, dims.as_ptr(), std::ptr::null()) };
    Ok(Handle {
        id: check_id(id, "could not make a dataspace")?,
        close: h5s::H5Sclose,
    })
}

/// Selects `count` items from `start` along the first axis of `space` (all of the rest).
fn select_items(space: &Handle, dims: &[u64], start: u64, count: u64) -> Result<(), H5Error> {
    let offset: Vec<hsize_t> = std::iter::once(start)
        .chain(dims[1..].iter().map(|_| 0))
        .collect();
    let size: Vec<hsize_t> = std::iter::once(count)
        .chain(dims[1..].iter().copied())
        .collect();
    // SAFETY: a live dataspace of rank `dims.len()`; both vectors hold that many values.
    let status = unsafe {
        h5s::H5Sselect_hyperslab(
            space.id,
            h5s::H5S_seloper_t::H5S_SELECT_SET,
            offset.as_ptr(),
            std::ptr::null(),
            size.as_ptr(),
            std::ptr::null(),
        )
    };
    check(status, "could not select frames")
}

/// A 1-D dataset of `element` values given as raw little-endian bytes, with `units`
/// when not empty.
pub fn values_dataset(
    parent: hid_t,
    name: &str,
    element: Element,
    bytes: &[u8],
    units: &str,
) -> Result<Handle, H5Error> {
    let space = simple_space(&[(bytes.len() / element.size()) as u64])?;
    typed_dataset(parent, name, element.types(), &space, bytes, units)
}

/// A scalar dataset of one `element` value given as raw little-endian bytes.
pub fn scalar_dataset(
    parent: hid_t,
    name: &str,
    element: Element,
    bytes: &[u8],
    units: &str,
) -> Result<Handle, H5Error> {
    typed_dataset(
        parent,
        name,
        element.types(),
        &scalar_space()?,
        bytes,
        units,
    )
}

/// A dataset of `space` whose (file, memory) types are `types`, written from `bytes`.
fn typed_dataset(
    parent: hid_t,
    name: &str,
    (file_type, memory_type): (hid_t, hid_t),
    space: &Handle,
    bytes: &[u8],
    units: &str,
) -> Result<Handle, H5Error> {
    let c_name = c_string(name);
    let what = format!("could not write dataset {name}");
    // SAFETY: live identifiers; `bytes` holds every element of the dataspace in the
    // memory type.
    unsafe {
        let ds = Handle {
            id: check_id(
                h5d::H5Dcreate2(
                    parent,
                    c_name.as_ptr(),
                    file_type,
                    space.id,
                    h5p::H5P_DEFAULT,
                    h5p::H5P_DEFAULT,
                    h5p::H5P_DEFAULT,
                ),
                &what,
            )?,
            close: h5d::H5Dclose,
        };
        if !bytes.is_empty() {
            check(
                h5d::H5Dwrite(
                    ds.id,
                    memory_type,
                    h5s::H5S_ALL,
                    h5s::H5S_ALL,
                    h5p::H5P_DEFAULT,
                    bytes.as_ptr().cast(),
                ),
                &what,
            )?;
        }
        if !units.is_empty() {
            string_attribute(ds.id, "units", units)?;
        }
        Ok(ds)
    }
}

/// An f64 array attribute (a transformation's `vector` and `offset`).
pub fn f64s_attribute(object: hid_t, name: &str, values: &[f64]) -> Result<(), H5Error> {
    typed_attribute(
        object,
        name,
        Element::F64.types(),
        &simple_space(&[values.len() as u64])?,
        bytemuck::cast_slice(values),
    )
}

/// One piece of a virtual dataset: `count` frames from `first` (in the virtual
/// dataset) are frames `source_first…` of `dataset` in `file`, whose extent is `source`.
#[derive(Debug, Clone)]
pub struct VirtualPiece {
    pub first: u64,
    pub count: u64,
    pub file: String,
    pub dataset: String,
    pub source_first: u64,
    pub source: Vec<u64>,
}

/// A virtual dataset of shape `dims` and type `element_type` made of `pieces`.
pub fn virtual_dataset(
    parent: hid_t,
    name: &str,
    element_type: hid_t,
    dims: &[u64],
    pieces: &[VirtualPiece],
) -> Result<(), H5Error> {
    let c_name = c_string(name);
    let what = format!("could not write virtual dataset {name}");
    let space = simple_space(dims)?;
    // SAFETY: property-list and dataset calls on live identifiers; the strings outlive
    // the calls that take them.
    unsafe {
        let dcpl = Handle {
            id: check_id(h5p::H5Pcreate(*h5p::H5P_CLS_DATASET_CREATE), &what)?,
            close: h5p::H5Pclose,
        };
        for piece in pieces {
            let virtual_space = simple_space(dims)?;
            select_items(&virtual_space, dims, piece.first, piece.count)?;
            let source_space = simple_space(&piece.source)?;
            select_items(
                &source_space,
                &piece.source,
                piece.source_first,
                piece.count,
            )?;
            let (file, dataset) = (c_string(&piece.file), c_string(&piece.dataset));
            check(
                h5p::H5Pset_virtual(
                    dcpl.id,
                    virtual_space.id,
                    file.as_ptr(),
                    dataset.as_ptr(),
                    source_space.id,
                ),
                &what,
            )?;
        }
        let id = h5d::H5Dcreate2(
            parent,
            c_name.as_ptr(),
            element_type,
            space.id,
            h5p::H5P_DEFAULT,
            dcpl.id,
            h5p::H5P_DEFAULT,
        );
        drop(Handle {
            id: check_id(id, &what)?,
            close: h5d::H5Dclose,
        });
    }
    Ok(())
}

/// The largest value of an unsigned integer type (the saturation value of a detector
/// that counts in it); `None` for other types.
pub fn unsigned_max(type_id: hid_t) -> Option<f64> {
    // SAFETY: a live datatype identifier.
    let (class, sign, size) = unsafe {
        (
            h5t::H5Tget_class(type_id),
            h5t::H5Tget_sign(type_id),
            h5t::H5Tget_size(type_id),
        )
    };
    (class == h5t::H5T_class_t::H5T_INTEGER && sign == h5t::H5T_sign_t::H5T_SGN_NONE)
        .then(|| 2f64.powi(8 * size as i32) - 1.0)
}

/// libhdf5's checksum of metadata (a superblock's, for one): for tests that edit one.
#[cfg(test)]
pub fn metadata_checksum(bytes: &[u8]) -> u32 {
    extern "C" {
        fn H5_checksum_metadata(data: *const c_void, len: usize, initval: u32) -> u32;
    }
    // SAFETY: libhdf5 reads `bytes.len()` bytes of a live slice.
    unsafe { H5_checksum_metadata(bytes.as_ptr().cast(), bytes.len(), 0) }
}
