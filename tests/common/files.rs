// SPDX-License-Identifier: LGPL-2.1-or-later
//! Passing file descriptors as a QMP client does (SCM_RIGHTS), and telling
//! whether the proxy let go of them. Test code: the library keeps its own
//! unsafe code private, so the tests carry their own small FFI here.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A new pipe: (read end, write end), close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 fills `ends` with two new descriptors, owned once here.
    unsafe {
        assert_eq!(
            libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC),
            0,
            "pipe2 failed"
        );
        (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1]))
    }
}

/// Sends `bytes` in one sendmsg with `files` attached.
pub fn send_with_files(stream: &UnixStream, bytes: &[u8], files: &[&OwnedFd]) {
    let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(fds.as_slice());
    let mut control = vec![0u64; 64];
    let mut data = libc::iovec {
        iov_base: bytes.as_ptr() as *mut _,
        iov_len: bytes.len(),
    };
    // SAFETY: every pointer is valid for the call; `control` is aligned and
    // large enough for one header with `payload` bytes.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut data;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut _;
        message.msg_controllen = libc::CMSG_SPACE(payload as u32) as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header) as *mut i32, fds.len());
        let sent = libc::sendmsg(stream.as_raw_fd(), &message, 0);
        assert_eq!(
            sent,
            bytes.len() as isize,
            "sendmsg failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One recvmsg: the bytes read and the descriptors that came with them.
pub fn receive_with_files(stream: &UnixStream, buffer: &mut [u8]) -> (usize, Vec<OwnedFd>) {
    let mut control = vec![0u64; 64];
    let mut files = Vec::new();
    let mut data = libc::iovec {
        iov_base: buffer.as_mut_ptr() as *mut _,
        iov_len: buffer.len(),
    };
    // SAFETY: every pointer is valid for the call; received descriptors are
    // owned once each.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut data;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut _;
        message.msg_controllen = (control.len() * 8) as _;
        let count = libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
        assert!(
            count >= 0,
            "recvmsg failed: {}",
            std::io::Error::last_os_error()
        );
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let first = libc::CMSG_DATA(header) as *const i32;
                for i in 0..n {
                    files.push(OwnedFd::from_raw_fd(first.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        (count as usize, files)
    }
}

/// Whether every write end of the pipe whose read end is `reader` has been
/// closed within `timeout` (the reader sees hang-up with nothing to read).
pub fn writers_closed(reader: &OwnedFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: reader.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `poll` is a valid pollfd for the call.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
    ready == 1 && poll.revents & libc::POLLHUP != 0
}

/// How many descriptors process `pid` has open.
pub fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd is readable")
        .count()
}

/// Whether process `pid` has the object behind `file` (e.g. one end of a
/// pipe: both ends name the same pipe) open among its descriptors.
pub fn holds(pid: i32, file: &OwnedFd) -> bool {
    let ours = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("our own descriptor");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd is readable")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .any(|target| target == ours)
}
