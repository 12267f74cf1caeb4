// SPDX-License-Identifier: LGPL-2.1-or-later
//! Every `unsafe` call of the program: what neither std nor the `virt`
//! crate offers safely.
//!
//! No raw pointer leaves this file: callers get RAII registrations, owned
//! file descriptors and std types.

use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr, CString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

/// Turns a C status (negative on failure, with errno set) into a Result.
fn check<T: Copy + Default + PartialOrd>(status: T) -> io::Result<T> {
    if status < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(status)
    }
}

/// The address of the UNIX socket at `path`.
fn socket_address(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: a zeroed sockaddr_un is a valid value (family 0, empty path).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a socket path must be 1 to {} bytes without NUL",
                address.sun_path.len() - 1
            ),
        ));
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as c_char;
    }
    Ok(address)
}

/// A new UNIX stream socket, close-on-exec, with `flags` added.
fn new_socket(flags: c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned descriptor is checked and owned at once.
    let raw = check(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Calls `bind` or `connect` (`call`) on `socket` with `address`.
fn with_address(
    socket: &OwnedFd,
    address: &libc::sockaddr_un,
    call: unsafe extern "C" fn(c_int, *const libc::sockaddr, libc::socklen_t) -> c_int,
) -> io::Result<()> {
    let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `address` is a valid sockaddr_un of `length` bytes that
    // outlives the call, and `socket` is a descriptor we own.
    check(unsafe {
        call(
            socket.as_raw_fd(),
            address as *const libc::sockaddr_un as *const libc::sockaddr,
            length,
        )
    })?;
    Ok(())
}

/// Creates a listening UNIX socket at `path` with mode 0600 whatever the
/// umask. The mode is set on the socket before `bind`, which creates the
/// file from it: no moment exists at which others could connect, and no
/// process-wide umask change races with other threads.
pub fn listen_private(path: &Path) -> io::Result<UnixListener> {
    let address = socket_address(path)?;
    let socket = new_socket(0)?;
    // SAFETY: fchmod on a descriptor we own.
    check(unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) })?;
    with_address(&socket, &address, libc::bind)?;
    // SAFETY: listen on a bound socket we own.
    check(unsafe { libc::listen(socket.as_raw_fd(), libc::SOMAXCONN) })?;
    Ok(UnixListener::from(socket))
}

/// Connects to the UNIX socket at `path` without ever blocking: a full
/// listen backlog gives `WouldBlock` instead of a wait, and a bound socket
/// nobody listens on gives `ConnectionRefused`.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let address = socket_address(path)?;
    let socket = new_socket(libc::SOCK_NONBLOCK)?;
    with_address(&socket, &address, libc::connect)?;
    Ok(UnixStream::from(socket))
}

/// Takes an exclusive flock(2) on `file` without waiting: false if another
/// open file holds it. The lock goes with the descriptor's last close.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor `file` owns; no memory involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::WouldBlock => Ok(false),
        _ => Err(error),
    }
}

/// Gives the socket file at `path` group `gid` and mode 0660, never through
/// a symbolic link. The group changes first, while the mode is still 0600,
/// so that no other group is ever granted access. bind(2) applies the umask,
/// so the mode is set here in full rather than taken from before the bind.
pub fn share_with_group(path: &Path, gid: u32) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds no NUL byte"))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; an
    // owner of -1 leaves the owner as it is.
    check(unsafe {
        libc::fchownat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::uid_t::MAX,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: as above; with AT_SYMLINK_NOFOLLOW a symbolic link is refused
    // (EOPNOTSUPP), never followed.
    check(unsafe {
        libc::fchmodat(
            libc::AT_FDCWD,
            path.as_ptr(),
            0o660,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Largest buffer offered to getgrnam_r: a group with thousands of members
/// fits, a lookup that never stops asking for more does not run for ever.
const GROUP_BUFFER_MAX: usize = 1 << 20;

/// The id of the group called `name`; None when there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    // No group name holds a NUL byte.
    let Ok(name) = CString::new(name) else {
        return Ok(None);
    };
    let mut buffer: Vec<c_char> = vec![0; 1024];
    loop {
        // SAFETY: a zeroed group is a valid value (NULL pointers), filled in
        // by getgrnam_r.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buffer` holds
        // `buffer.len()` bytes; the strings `group` points to live in
        // `buffer`, and only the number is read.
        let status = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut group,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        match status {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buffer.len() < GROUP_BUFFER_MAX => {
                let larger = buffer.len() * 2;
                buffer.resize(larger, 0);
            }
            // getgrnam_r(3) lists these for "the name was not found".
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Who is at the other end of a UNIX socket, as the kernel recorded it at
/// connect(2) (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The credentials of the process that connected `stream`.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<Credentials> {
    // SAFETY: a zeroed ucred is a valid value, filled in by getsockopt.
    let mut credentials: libc::ucred = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `credentials` has room for `length` bytes and both outlive the
    // call; `stream` owns the descriptor.
    check(unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut credentials as *mut libc::ucred as *mut c_void,
            &mut length,
        )
    })?;
    Ok(Credentials {
        pid: credentials.pid,
        uid: credentials.uid,
        gid: credentials.gid,
    })
}

/// Sets the listen backlog of `listener` (a second listen(2) does), so that
/// tests can fill it.
#[cfg(test)]
pub fn set_backlog(listener: &UnixListener, backlog: c_int) -> io::Result<()> {
    // SAFETY: listen on a descriptor `listener` owns; no memory involved.
    check(unsafe { libc::listen(listener.as_raw_fd(), backlog) })?;
    Ok(())
}

/// What a descriptor passed by the service manager is, as far as serving
/// QMP on it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// AF_UNIX.
    pub unix: bool,
    /// SOCK_STREAM.
    pub stream: bool,
    /// listen(2) was called on it (SO_ACCEPTCONN).
    pub listening: bool,
    /// The path it is bound to: `None` when unbound or abstract.
    pub path: Option<std::path::PathBuf>,
}

/// An integer option of the socket `fd`.
fn socket_option(fd: RawFd, option: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut length = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` has room for `length` bytes and both outlive the call;
    // getsockopt only reads the descriptor, whoever owns it.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            &mut value as *mut c_int as *mut c_void,
            &mut length,
        )
    })?;
    Ok(value)
}

/// Looks at descriptor `fd` without taking it: EBADF when it is not open,
/// ENOTSOCK when it is not a socket.
pub fn socket_info(fd: RawFd) -> io::Result<SocketInfo> {
    // SAFETY: a zeroed sockaddr_un is a valid value (family 0, empty path).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `address` has room for `length` bytes and both outlive the
    // call; a longer address of another family is truncated, its family
    // still filled in. getsockname only reads the descriptor.
    check(unsafe {
        libc::getsockname(
            fd,
            &mut address as *mut libc::sockaddr_un as *mut libc::sockaddr,
            &mut length,
        )
    })?;
    let unix = c_int::from(address.sun_family) == libc::AF_UNIX;
    let stream = socket_option(fd, libc::SO_TYPE)? == libc::SOCK_STREAM;
    let listening = socket_option(fd, libc::SO_ACCEPTCONN)? != 0;
    let mut path = None;
    if unix {
        let start = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        let bytes: Vec<u8> = address
            .sun_path
            .iter()
            .take((length as usize).saturating_sub(start))
            .map(|&c| c as u8)
            .take_while(|&b| b != 0)
            .collect();
        // Unbound (no bytes) and abstract (a leading NUL) have no path.
        if !bytes.is_empty() {
            path = Some(std::path::PathBuf::from(
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes),
            ));
        }
    }
    Ok(SocketInfo {
        unix,
        stream,
        listening,
        path,
    })
}

/// Takes the descriptors `fds` that the service manager passed to this
/// process (sd_listen_fds(3)) and sets close-on-exec on them. Only once per
/// process, so that no descriptor ever has two owners; none is taken unless
/// all are open.
pub fn take_passed(fds: &[RawFd]) -> io::Result<Vec<OwnedFd>> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut sorted = fds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != fds.len() || fds.iter().any(|&fd| fd < 3) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "passed descriptors are distinct and from 3 on",
        ));
    }
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the passed descriptors were already taken",
        ));
    }
    for &fd in fds {
        // SAFETY: fcntl on a descriptor number touches no memory; F_SETFD
        // only changes the descriptor's own flag.
        check(unsafe {
            let flags = check(libc::fcntl(fd, libc::F_GETFD))?;
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)
        })?;
    }
    Ok(fds
        .iter()
        // SAFETY: each is open (fcntl succeeded), distinct, handed to this
        // process by the service manager and claimed by nothing else in it,
        // and TAKEN makes this the only time they are owned.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

/// Makes every thread allocate from glibc's main arena. By default glibc
/// gives threads arenas of their own (up to 8 per core), each keeping the
/// memory its threads freed: with a thread per client that is megabytes
/// that never return. The proxy allocates little, so one arena costs
/// nothing measurable.
pub fn share_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX is a
    // valid parameter on glibc. A failure (0) leaves the default: harmless.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Most open files the proxy asks for: with the embedded driver libvirt
/// closes every descriptor up to the limit each time it forks QEMU.
const OPEN_FILES_CAP: libc::rlim_t = 65_536;

/// Raises the soft limit on open files toward the hard limit, up to
/// `OPEN_FILES_CAP`, so that many clients passing descriptors fit; the
/// default soft limit (often 1024) is meant for select(), which we do not
/// use. A failure leaves the limit as it was: harmless.
pub fn raise_open_file_limit() {
    // SAFETY: a zeroed rlimit is a valid value, filled in by getrlimit.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one rlimit into `limit`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return;
    }
    let wanted = limit.rlim_max.min(OPEN_FILES_CAP);
    if wanted > limit.rlim_cur {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit reads one valid rlimit; a soft limit at most the
        // hard one needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// Gives the memory freed inside the heap back to the system, so that the
/// proxy's footprint returns to its level once a crowd of clients left.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits until one of `files` is readable (for a listening socket: a
/// connection waits), for at most `limit` (None: for ever); returns which
/// are readable, all false when the time ran out.
pub fn readable(files: &[BorrowedFd], limit: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = files
        .iter()
        .map(|file| libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = limit.map_or(-1, |limit| {
        c_int::try_from(limit.as_millis().min(c_int::MAX as u128)).unwrap_or(c_int::MAX)
    });
    // SAFETY: `polled` is a valid array of `polled.len()` pollfd structs
    // for the whole call; the descriptors are borrowed, hence open.
    check(unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout) })?;
    Ok(polled
        .iter()
        .map(|entry| entry.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

/// A QMP event of the guest, copied out of libvirt's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorEvent {
    pub name: String,
    pub seconds: i64,
    pub micros: u32,
    /// The event's `data` member as compact JSON; None when it has none.
    pub data: Option<String>,
}

/// What a lifecycle event says of the domain, as far as the proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Started,
    Stopped,
    Undefined,
    Other,
}

/// A Rust closure as a libvirt callback's opaque pointer: boxed twice, so
/// that the pointer is thin; freed only by `free_callback::<T>`.
type Callback<T> = Box<dyn Fn(T) + Send>;

/// Leaks `callback` into an opaque pointer for libvirt.
fn into_opaque<T>(callback: Callback<T>) -> *mut c_void {
    Box::into_raw(Box::new(callback)) as *mut c_void
}

/// Runs the closure behind `opaque` with `value`. Unwinding into C is
/// undefined, so a panic is contained here.
///
/// # Safety
/// `opaque` must come from `into_opaque::<T>` and not be freed yet.
unsafe fn call_back<T>(opaque: *mut c_void, value: T) {
    let callback = &*(opaque as *const Callback<T>);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(value)));
}

unsafe extern "C" fn free_callback<T>(opaque: *mut c_void) {
    // SAFETY: libvirt calls this once, when the registration ends, with the
    // pointer that `into_opaque::<T>` made.
    drop(unsafe { Box::from_raw(opaque as *mut Callback<T>) });
}

/// Registers a callback with `register`, which gets the opaque pointer and
/// its free function and returns libvirt's status; on failure the callback
/// is freed here, since libvirt did not keep it.
fn register_callback<T>(
    callback: Callback<T>,
    register: impl FnOnce(*mut c_void, sys::virFreeCallback) -> c_int,
) -> Result<c_int, virt::error::Error> {
    let opaque = into_opaque(callback);
    let status = register(opaque, Some(free_callback::<T>));
    if status < 0 {
        // SAFETY: libvirt did not keep `opaque`; it is still ours to free.
        unsafe { free_callback::<T>(opaque) };
        return Err(virt::error::Error::last_error());
    }
    Ok(status)
}

/// The two kinds of domain event registration, which deregister differently.
enum EventKind {
    Monitor,
    Lifecycle,
}

/// A domain event registration; deregistered on drop, which frees its callback.
pub struct EventRegistration {
    connection: Connect,
    callback_id: c_int,
    kind: EventKind,
}

impl EventRegistration {
    fn new(connection: &Connect, callback_id: c_int, kind: EventKind) -> EventRegistration {
        EventRegistration {
            connection: connection.clone(),
            callback_id,
            kind,
        }
    }

    /// Calls `on_event` with every QMP event of `domain`, on libvirt's event
    /// loop thread: it must not block nor take a lock a libvirt caller holds.
    pub fn monitor(
        connection: &Connect,
        domain: &Domain,
        on_event: Callback<MonitorEvent>,
    ) -> Result<EventRegistration, virt::error::Error> {
        let callback_id = register_callback(on_event, |opaque, free| {
            // SAFETY: the pointers come from live wrappers; libvirt hands
            // `opaque` to `on_monitor_event` and frees it through `free`.
            unsafe {
                sys::virConnectDomainQemuMonitorEventRegister(
                    connection.as_ptr(),
                    domain.as_ptr(),
                    std::ptr::null(),
                    Some(on_monitor_event),
                    opaque,
                    free,
                    0,
                )
            }
        })?;
        Ok(EventRegistration::new(
            connection,
            callback_id,
            EventKind::Monitor,
        ))
    }

    /// Calls `on_event` when `domain` starts, stops or changes otherwise, on
    /// libvirt's event loop thread (same rules as `monitor`).
    pub fn lifecycle(
        connection: &Connect,
        domain: &Domain,
        on_event: Callback<Lifecycle>,
    ) -> Result<EventRegistration, virt::error::Error> {
        type LifecycleCallback = unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virDomainPtr,
            c_int,
            c_int,
            *mut c_void,
        ) -> c_int;
        let callback: LifecycleCallback = on_lifecycle_event;
        let callback_id = register_callback(on_event, |opaque, free| {
            // SAFETY: libvirt calls a lifecycle callback with exactly the
            // signature of `virConnectDomainEventCallback`, which the generic
            // registration asks to be cast to the generic callback type;
            // `opaque` goes to `on_lifecycle_event` and is freed through `free`.
            unsafe {
                sys::virConnectDomainEventRegisterAny(
                    connection.as_ptr(),
                    domain.as_ptr(),
                    sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
                    Some(std::mem::transmute::<
                        LifecycleCallback,
                        unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                    >(callback)),
                    opaque,
                    free,
                )
            }
        })?;
        Ok(EventRegistration::new(
            connection,
            callback_id,
            EventKind::Lifecycle,
        ))
    }
}

impl Drop for EventRegistration {
    fn drop(&mut self) {
        // SAFETY: the id came from a successful registration of this kind on
        // this connection and is deregistered only here; libvirt then frees
        // the callback.
        unsafe {
            let connection = self.connection.as_ptr();
            match self.kind {
                EventKind::Monitor => {
                    sys::virConnectDomainQemuMonitorEventDeregister(connection, self.callback_id)
                }
                EventKind::Lifecycle => {
                    sys::virConnectDomainEventDeregisterAny(connection, self.callback_id)
                }
            }
        };
    }
}

/// A close callback on a connection; unregistered on drop.
pub struct CloseWatch {
    connection: Connect,
}

impl CloseWatch {
    /// Calls `on_close` (from whatever thread drives the connection's
    /// socket at that moment: it must not block nor take locks a libvirt
    /// caller may hold) when libvirt loses the connection: the daemon went
    /// away (EOF), stopped answering (keepalive) or the socket failed.
    pub fn register(
        connection: &Connect,
        on_close: Callback<()>,
    ) -> Result<CloseWatch, virt::error::Error> {
        register_callback(on_close, |opaque, free| {
            // SAFETY: libvirt hands `opaque` to `on_connection_closed` and
            // frees it through `free`.
            unsafe {
                sys::virConnectRegisterCloseCallback(
                    connection.as_ptr(),
                    Some(on_connection_closed),
                    opaque,
                    free,
                )
            }
        })?;
        Ok(CloseWatch {
            connection: connection.clone(),
        })
    }
}

impl Drop for CloseWatch {
    fn drop(&mut self) {
        // SAFETY: unregisters the callback registered in `register` on this
        // connection; libvirt then frees it.
        unsafe {
            sys::virConnectUnregisterCloseCallback(
                self.connection.as_ptr(),
                Some(on_connection_closed),
            )
        };
    }
}

unsafe extern "C" fn on_connection_closed(
    _connection: sys::virConnectPtr,
    reason: c_int,
    opaque: *mut c_void,
) {
    // Our own close is no loss.
    if reason != sys::VIR_CONNECT_CLOSE_REASON_CLIENT as c_int {
        // SAFETY: `opaque` is the Callback<()> given at registration.
        unsafe { call_back(opaque, ()) };
    }
}

/// Copies C text into an owned String; invalid UTF-8 is replaced.
///
/// # Safety
/// `text` must be NULL or a NUL-terminated string valid for the call.
unsafe fn owned_text(text: *const c_char) -> Option<String> {
    if text.is_null() {
        None
    } else {
        Some(CStr::from_ptr(text).to_string_lossy().into_owned())
    }
}

unsafe extern "C" fn on_monitor_event(
    _connection: sys::virConnectPtr,
    _domain: sys::virDomainPtr,
    event: *const c_char,
    seconds: c_longlong,
    micros: c_uint,
    details: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: `event` and `details` are NUL-terminated strings (details may
    // be NULL) valid during this call; `opaque` is the
    // Callback<MonitorEvent> given at registration.
    unsafe {
        let event = MonitorEvent {
            name: owned_text(event).unwrap_or_default(),
            seconds,
            micros,
            data: owned_text(details),
        };
        call_back(opaque, event);
    }
}

unsafe extern "C" fn on_lifecycle_event(
    _connection: sys::virConnectPtr,
    _domain: sys::virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let lifecycle = match event {
        e if e == sys::VIR_DOMAIN_EVENT_STARTED as c_int => Lifecycle::Started,
        e if e == sys::VIR_DOMAIN_EVENT_STOPPED as c_int => Lifecycle::Stopped,
        e if e == sys::VIR_DOMAIN_EVENT_UNDEFINED as c_int => Lifecycle::Undefined,
        _ => Lifecycle::Other,
    };
    // SAFETY: `opaque` is the Callback<Lifecycle> given at registration.
    unsafe { call_back(opaque, lifecycle) };
    0
}

/// `virDomainQemuMonitorCommandWithFiles`: runs `command` with `files`
/// attached and returns the reply with the files QEMU sent back. The input
/// files stay ours (libvirt duplicates them) and are closed when dropped.
pub fn monitor_command_with_files(
    domain: &Domain,
    command: &str,
    files: &[OwnedFd],
) -> Result<(String, Vec<OwnedFd>), virt::error::Error> {
    let command =
        CString::new(command).expect("the QMP writer escapes NUL, so commands hold no NUL byte");
    let mut in_fds: Vec<c_int> = files.iter().map(|f| f.as_raw_fd()).collect();
    let mut out_count: c_uint = 0;
    let mut out_fds: *mut c_int = std::ptr::null_mut();
    let mut result: *mut c_char = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `in_fds` holds open
    // descriptors we own; libvirt allocates `result` and `out_fds`, freed below.
    let status = unsafe {
        sys::virDomainQemuMonitorCommandWithFiles(
            domain.as_ptr(),
            command.as_ptr(),
            in_fds.len() as c_uint,
            in_fds.as_mut_ptr(),
            &mut out_count,
            &mut out_fds,
            &mut result,
            0,
        )
    };
    if status < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut returned = Vec::with_capacity(out_count as usize);
    if !out_fds.is_null() {
        // SAFETY: libvirt returned `out_count` descriptors in a malloc'd
        // array; they are now ours to own and the array ours to free.
        unsafe {
            for i in 0..out_count as usize {
                returned.push(OwnedFd::from_raw_fd(*out_fds.add(i)));
            }
            libc::free(out_fds as *mut c_void);
        }
    }
    // SAFETY: on success `result` is a malloc'd NUL-terminated string we must free.
    let text = unsafe {
        let text = owned_text(result).unwrap_or_default();
        libc::free(result as *mut c_void);
        text
    };
    Ok((text, returned))
}

/// An epoll(7) instance: unlike poll(2), what it watches can change while
/// another thread waits on it, and the wait sees the change.
pub struct Epoll(OwnedFd);

/// What an `Epoll` reported ready: the data given with the descriptor, and
/// EPOLL* bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub data: u64,
    pub events: u32,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointer is passed; a new descriptor is returned or -1.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 just returned this descriptor, owned by no one else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for `events` (EPOLL* bits, level-triggered), reported
    /// with `data`; `added` says whether it is watched already. The
    /// descriptor is a plain number here: the caller keeps it open.
    pub fn watch(&self, fd: RawFd, events: u32, data: u64, added: bool) -> io::Result<()> {
        let operation = if added {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: `event` is a valid epoll_event for the whole call; the
        // kernel copies it.
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), operation, fd, &mut event) }).map(drop)
    }

    /// Stops watching `fd`.
    pub fn forget(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (NULL is allowed
        // since Linux 2.6.9).
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })
        .map(drop)
    }

    /// Waits until something watched is ready, for at most `limit` (None:
    /// for ever; rounded up to whole milliseconds, so that a wait never
    /// ends before it), and replaces `ready` with what is. A signal ends
    /// the wait early with `Interrupted`.
    pub fn wait(&self, ready: &mut Vec<Ready>, limit: Option<Duration>) -> io::Result<()> {
        const MOST: usize = 64;
        let timeout = limit.map_or(-1, |limit| {
            let ms = limit.as_nanos().div_ceil(1_000_000);
            c_int::try_from(ms).unwrap_or(c_int::MAX)
        });
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MOST];
        // SAFETY: `events` has room for MOST entries, the most the kernel
        // is told it may write, for the whole call.
        let count = check(unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                MOST as c_int,
                timeout,
            )
        })?;
        ready.clear();
        ready.extend(events[..count as usize].iter().map(|event| Ready {
            data: event.u64,
            events: event.events,
        }));
        Ok(())
    }
}

/// The opaque data libvirt gave its event loop with a callback, and the
/// function that frees it; dropping it frees the data.
///
/// libvirt wants the free function called from a clean stack, never from
/// within one of its callbacks nor from the remove call: the event loop
/// drops these only on its own thread, between dispatches.
struct CallbackData {
    opaque: *mut c_void,
    free: sys::virFreeCallback,
}

// SAFETY: libvirt hands its callbacks to an event loop that runs them on
// another thread than the registering one (that is what an event loop
// implementation is for); the data behind `opaque` is libvirt's, guarded by
// its own locks, and only the callbacks and `drop` touch it.
unsafe impl Send for CallbackData {}
// SAFETY: as above; the callbacks only pass the pointer back to libvirt.
unsafe impl Sync for CallbackData {}

impl CallbackData {
    /// For the tests' own callbacks: nothing to free.
    #[cfg(test)]
    fn none() -> CallbackData {
        CallbackData {
            opaque: std::ptr::null_mut(),
            free: None,
        }
    }
}

impl Drop for CallbackData {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the free function libvirt gave with `opaque`, called
            // once, as the last use of `opaque`.
            unsafe { free(self.opaque) }
        }
    }
}

/// A handle callback libvirt gave to its event loop, with its data.
pub struct HandleCallback {
    callback: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void),
    data: CallbackData,
}

impl HandleCallback {
    /// Tells libvirt that `events` (VIR_EVENT_HANDLE_*) happened on `fd`,
    /// watched as `watch`.
    pub fn call(&self, watch: c_int, fd: c_int, events: c_int) {
        // SAFETY: the function and its opaque data came together from
        // libvirt's add-handle call, and the data stays valid until `free`
        // runs, in its drop, which cannot happen while `self` is borrowed.
        unsafe { (self.callback)(watch, fd, events, self.data.opaque) }
    }

    /// A callback of the tests' own, with no data to free.
    #[cfg(test)]
    pub fn for_tests(callback: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void)) -> Self {
        HandleCallback {
            callback,
            data: CallbackData::none(),
        }
    }
}

/// A timeout callback libvirt gave to its event loop, with its data.
pub struct TimeoutCallback {
    callback: unsafe extern "C" fn(c_int, *mut c_void),
    data: CallbackData,
}

impl TimeoutCallback {
    /// Tells libvirt that the timer `timer` expired.
    pub fn call(&self, timer: c_int) {
        // SAFETY: as in HandleCallback::call.
        unsafe { (self.callback)(timer, self.data.opaque) }
    }

    /// A callback of the tests' own, with no data to free.
    #[cfg(test)]
    pub fn for_tests(callback: unsafe extern "C" fn(c_int, *mut c_void)) -> Self {
        TimeoutCallback {
            callback,
            data: CallbackData::none(),
        }
    }
}

/// An event loop for libvirt, as the six functions of virEventRegisterImpl.
/// Each may be called from any thread, also from within a callback.
/// Events are VIR_EVENT_HANDLE_* bits (0: not watched), a frequency is in
/// ms (-1: disabled, 0: on every loop iteration); ids are > 0 and unique.
pub trait EventImpl: Sync {
    /// Watches `fd`; gives the callback back when it cannot, so that its
    /// data is not freed (libvirt keeps it).
    fn add_handle(
        &self,
        fd: c_int,
        events: c_int,
        callback: HandleCallback,
    ) -> Result<c_int, HandleCallback>;
    fn update_handle(&self, watch: c_int, events: c_int);
    /// False when no such handle is registered.
    fn remove_handle(&self, watch: c_int) -> bool;
    /// Starts a timer; gives the callback back when it cannot.
    fn add_timeout(
        &self,
        frequency: c_int,
        callback: TimeoutCallback,
    ) -> Result<c_int, TimeoutCallback>;
    fn update_timeout(&self, timer: c_int, frequency: c_int);
    /// False when no such timer is registered.
    fn remove_timeout(&self, timer: c_int) -> bool;
}

/// The implementation libvirt calls through the trampolines below.
static EVENT_IMPL: std::sync::OnceLock<&'static dyn EventImpl> = std::sync::OnceLock::new();

/// Makes `implementation` libvirt's event loop, for the whole process and
/// for good; false (and nothing changed) when one was registered already.
/// Must come before the first connection is opened.
pub fn register_event_impl(implementation: &'static dyn EventImpl) -> bool {
    if EVENT_IMPL.set(implementation).is_err() {
        return false;
    }
    // SAFETY: virInitialize has no preconditions (the default registration
    // calls it first too); the six trampolines have exactly the signatures
    // virEventRegisterImpl asks for and stay valid for the whole process.
    unsafe {
        sys::virInitialize();
        sys::virEventRegisterImpl(
            Some(add_handle_trampoline),
            Some(update_handle_trampoline),
            Some(remove_handle_trampoline),
            Some(add_timeout_trampoline),
            Some(update_timeout_trampoline),
            Some(remove_timeout_trampoline),
        );
    }
    true
}

/// Runs `call` on the registered implementation; `failed` when there is
/// none. A panic is not caught: it aborts at the `extern "C"` boundary,
/// where catching it could free a callback's data that libvirt then frees
/// again.
fn with_event_impl<T>(failed: T, call: impl FnOnce(&dyn EventImpl) -> T) -> T {
    match EVENT_IMPL.get() {
        Some(implementation) => call(*implementation),
        None => failed,
    }
}

unsafe extern "C" fn add_handle_trampoline(
    fd: c_int,
    events: c_int,
    callback: sys::virEventHandleCallback,
    opaque: *mut c_void,
    free: sys::virFreeCallback,
) -> c_int {
    let Some(callback) = callback else {
        return -1;
    };
    let callback = HandleCallback {
        callback,
        data: CallbackData { opaque, free },
    };
    with_event_impl(-1, |events_impl| {
        events_impl
            .add_handle(fd, events, callback)
            // Refused: libvirt still owns the data, so no free.
            .unwrap_or_else(|refused| {
                std::mem::forget(refused);
                -1
            })
    })
}

unsafe extern "C" fn update_handle_trampoline(watch: c_int, events: c_int) {
    with_event_impl((), |events_impl| events_impl.update_handle(watch, events))
}

unsafe extern "C" fn remove_handle_trampoline(watch: c_int) -> c_int {
    with_event_impl(-1, |events_impl| match events_impl.remove_handle(watch) {
        true => 0,
        false => -1,
    })
}

unsafe extern "C" fn add_timeout_trampoline(
    frequency: c_int,
    callback: sys::virEventTimeoutCallback,
    opaque: *mut c_void,
    free: sys::virFreeCallback,
) -> c_int {
    let Some(callback) = callback else {
        return -1;
    };
    let callback = TimeoutCallback {
        callback,
        data: CallbackData { opaque, free },
    };
    with_event_impl(-1, |events_impl| {
        events_impl
            .add_timeout(frequency, callback)
            .unwrap_or_else(|refused| {
                std::mem::forget(refused);
                -1
            })
    })
}

unsafe extern "C" fn update_timeout_trampoline(timer: c_int, frequency: c_int) {
    with_event_impl((), |events_impl| {
        events_impl.update_timeout(timer, frequency)
    })
}

unsafe extern "C" fn remove_timeout_trampoline(timer: c_int) -> c_int {
    with_event_impl(-1, |events_impl| match events_impl.remove_timeout(timer) {
        true => 0,
        false => -1,
    })
}

/// Most descriptors taken from one read, QEMU's TCP_MAX_FDS: the kernel
/// closes any beyond (MSG_CTRUNC).
const MAX_FILES_PER_READ: usize = 16;

/// Most descriptors sent with one reply.
const MAX_FILES_PER_SEND: usize = 32;

/// Reads from `stream` into `buffer` like `read`, and appends the file
/// descriptors passed with those bytes (SCM_RIGHTS) to `files`, with
/// close-on-exec set as they are received.
pub fn receive(
    stream: &UnixStream,
    buffer: &mut [u8],
    files: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut control = [0u64; control_words(MAX_FILES_PER_READ)];
    let mut data = libc::iovec {
        iov_base: buffer.as_mut_ptr() as *mut c_void,
        iov_len: buffer.len(),
    };
    // SAFETY: a zeroed msghdr is valid (no name, no buffers).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut data;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr() as *mut c_void;
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `message` points at `data` and `control`, which outlive the call.
    let count = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) };
    check(count)?;
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG
    // macros walk it within those bounds, and each SCM_RIGHTS payload holds
    // descriptors that are now ours, each owned exactly once here.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let first = libc::CMSG_DATA(header) as *const c_int;
                for i in 0..payload / std::mem::size_of::<c_int>() {
                    files.push(OwnedFd::from_raw_fd(first.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Ok(count as usize)
}

/// Writes all of `bytes` to `stream`, passing `files` (SCM_RIGHTS) with
/// the first part written.
pub fn send_with_files(stream: &UnixStream, bytes: &[u8], files: &[OwnedFd]) -> io::Result<()> {
    if files.is_empty() || files.len() > MAX_FILES_PER_SEND {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "1 to 32 files per message",
        ));
    }
    let mut control = [0u64; control_words(MAX_FILES_PER_SEND)];
    let payload = files.len() * std::mem::size_of::<c_int>();
    let mut data = libc::iovec {
        iov_base: bytes.as_ptr() as *mut c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: a zeroed msghdr is valid (no name, no buffers).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut data;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr() as *mut c_void;
    // SAFETY: CMSG_SPACE is a pure size computation.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(payload as u32) } as _;
    // SAFETY: `control` is large enough for one header with `payload` bytes
    // (checked above against MAX_FILES_PER_SEND) and correctly aligned (u64);
    // the descriptors are open for the duration of the call.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        let first = libc::CMSG_DATA(header) as *mut c_int;
        for (i, file) in files.iter().enumerate() {
            first.add(i).write_unaligned(file.as_raw_fd());
        }
        libc::sendmsg(stream.as_raw_fd(), &message, libc::MSG_NOSIGNAL)
    };
    check(sent)?;
    // The descriptors went with the first part; the rest is plain bytes.
    (&*stream).write_all(&bytes[sent as usize..])
}

/// Sends what the socket takes of `bytes` now, without blocking.
pub fn send_nonblocking(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length during the call.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr() as *const c_void,
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    check(sent).map(|sent| sent as usize)
}

/// u64 words for a control buffer holding `files` descriptors.
const fn control_words(files: usize) -> usize {
    // CMSG_SPACE is not const: header (16 bytes on Linux) plus payload, rounded up.
    (16 + files * std::mem::size_of::<c_int>()).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_sees_a_watch_added_while_another_thread_waits() {
        let epoll = std::sync::Arc::new(Epoll::new().unwrap());
        let (mut writer, reader) = UnixStream::pair().unwrap();
        writer.write_all(b"x").unwrap();
        let waiter = {
            let epoll = std::sync::Arc::clone(&epoll);
            std::thread::spawn(move || {
                let mut ready = Vec::new();
                epoll
                    .wait(&mut ready, Some(Duration::from_secs(10)))
                    .unwrap();
                ready
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let events = libc::EPOLLIN as u32;
        epoll.watch(reader.as_raw_fd(), events, 7, false).unwrap();
        let ready = waiter.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(ready, vec![Ready { data: 7, events }]);
    }

    #[test]
    fn epoll_changes_and_forgets_watches() {
        let epoll = Epoll::new().unwrap();
        let (mut writer, reader) = UnixStream::pair().unwrap();
        let mut ready = vec![Ready { data: 1, events: 1 }];
        let (readable, writable) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
        epoll.watch(reader.as_raw_fd(), readable, 3, false).unwrap();
        epoll.wait(&mut ready, Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, vec![]);
        epoll.watch(reader.as_raw_fd(), writable, 4, true).unwrap();
        epoll.wait(&mut ready, Some(Duration::ZERO)).unwrap();
        assert_eq!(
            ready,
            vec![Ready {
                data: 4,
                events: writable
            }]
        );
        // Twice: epoll takes a descriptor once.
        let again = epoll.watch(reader.as_raw_fd(), readable, 5, false);
        assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));
        epoll.forget(reader.as_raw_fd()).unwrap();
        writer.write_all(b"x").unwrap();
        epoll.wait(&mut ready, Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, vec![]);
        assert!(epoll.forget(reader.as_raw_fd()).is_err());
    }

    #[test]
    fn epoll_waits_at_least_its_limit_and_refuses_regular_files() {
        let epoll = Epoll::new().unwrap();
        let mut ready = Vec::new();
        let started = std::time::Instant::now();
        epoll
            .wait(&mut ready, Some(Duration::from_micros(1500)))
            .unwrap();
        assert!(started.elapsed() >= Duration::from_micros(1500));
        assert_eq!(ready, vec![]);
        // The event loop counts on EPERM to tell a regular file.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let refused = epoll.watch(file.as_raw_fd(), libc::EPOLLIN as u32, 1, false);
        assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn peer_credentials_name_our_process() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let credentials = peer_credentials(&theirs).unwrap();
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(
            credentials,
            Credentials {
                pid: std::process::id() as i32,
                uid,
                gid,
            }
        );
        drop(ours);
    }

    #[test]
    fn group_id_finds_root_and_not_a_missing_group() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("vqmp-no-such-group").unwrap(), None);
        assert_eq!(group_id("").unwrap(), None);
        assert_eq!(group_id("bad\0name").unwrap(), None);
    }

    #[test]
    fn passed_descriptors_are_taken_once_with_close_on_exec() {
        use std::os::fd::IntoRawFd;
        let mut socket = std::env::temp_dir();
        socket.push(format!("vqmp-ffi-passed-{}", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let fd = listen_private(&socket).unwrap().into_raw_fd();
        // Refused before anything is taken.
        assert!(take_passed(&[2]).is_err());
        assert!(take_passed(&[fd, fd]).is_err());
        // SAFETY: F_SETFD on a descriptor this test owns (released above).
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let taken = take_passed(&[fd]).unwrap();
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(taken[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let info = socket_info(taken[0].as_raw_fd()).unwrap();
        assert!(info.unix && info.stream && info.listening);
        assert_eq!(info.path.as_deref(), Some(socket.as_path()));
        let again = take_passed(&[fd]).expect_err("taken once only");
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_file(&socket).unwrap();
    }

    #[test]
    fn received_descriptors_are_close_on_exec() {
        let (sender, receiver) = UnixStream::pair().unwrap();
        let (file, _other) = UnixStream::pair().unwrap();
        send_with_files(&sender, b"x", &[OwnedFd::from(file)]).unwrap();
        let mut buffer = [0u8; 8];
        let mut files = Vec::new();
        assert_eq!(receive(&receiver, &mut buffer, &mut files).unwrap(), 1);
        assert_eq!(files.len(), 1);
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(files[0].as_raw_fd(), libc::F_GETFD) };
        assert!(
            flags >= 0 && flags & libc::FD_CLOEXEC != 0,
            "flags {flags:#x}"
        );
    }
}
