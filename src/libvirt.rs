// SPDX-License-Identifier: LGPL-2.1-or-later
//! The libvirt side: open the connection, find the guest, check it is a
//! running QEMU guest, and run monitor commands on it.
//!
//! The connection and domain sit behind a Mutex that is held only for the
//! libvirt call itself, never across client socket I/O. When libvirt goes
//! away, a reconnecting thread finds the same guest again by UUID.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use crate::error::{Error, Result};
use crate::events::Notice;
use crate::ffi;
use crate::log::Level;
use crate::monitor::{Failure, Monitor, Reply};

/// Stops libvirt printing its errors next to ours, unless debugging: each
/// error is reported once, by us. Must run before any other thread starts.
pub fn quiet(level: Level) {
    if level >= Level::Debug {
        return;
    }
    virt::error::clear_error_callback();
    // The embedded driver logs its errors to stderr by itself; a log output
    // set by the user wins.
    if std::env::var_os("LIBVIRT_LOG_OUTPUTS").is_none()
        && std::env::var_os("LIBVIRT_DEBUG").is_none()
    {
        std::env::set_var("LIBVIRT_LOG_OUTPUTS", "4:file:/dev/null");
    }
}

/// What a command gets while the connection to libvirt is down.
pub const CONNECTION_LOST: &str = "the libvirt connection was lost and is being re-established";

/// How long a daemon may stay silent before the connection counts as
/// lost: keepalive probes every 2 s, 3 unanswered ones end it.
pub const KEEPALIVE_INTERVAL: i32 = 2;
pub const KEEPALIVE_COUNT: u32 = 3;

/// First and longest pause between reconnection attempts.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// A running QEMU guest, reached through a libvirt connection that is
/// re-established if libvirt goes away.
pub struct Guest {
    /// The URI as given, for reconnecting (None: libvirt's default).
    requested_uri: Option<String>,
    /// The URI libvirt actually connected to, for messages.
    pub uri: String,
    /// The guest's name, for messages.
    pub name: String,
    /// The guest is found again by UUID: names and IDs can change.
    uuid: String,
    /// None while the connection is down.
    link: Mutex<Option<Link>>,
    /// Cleared as soon as the loss is known, so that commands fail at once
    /// instead of queueing on `link` behind a call that is still failing.
    connected: AtomicBool,
    /// Counts connections, so that a late report about an old one is ignored.
    generation: AtomicU64,
    notices: Sender<Notice>,
    losses: Sender<Reconnect>,
}

/// One live connection and what is registered on it. Fields drop in order:
/// the registrations go before the connection closes.
struct Link {
    generation: u64,
    _watch: Watch,
    domain: Domain,
    connection: Connect,
}

/// What keeps the guest's events flowing; dropping it stops them.
struct Watch {
    _monitor: ffi::MonitorEvents,
    _lifecycle: ffi::LifecycleEvents,
    _close: Option<ffi::CloseWatch>,
}

/// Work for the thread that re-establishes the connection.
pub enum Reconnect {
    /// libvirt closed the connection of this generation.
    Lost(u64),
    /// The proxy is stopping.
    Quit,
}

/// How a reconnection ended.
enum Outcome {
    Running,
    GuestGone,
    GaveUp,
    Quit,
}

impl Guest {
    /// Connects to `uri` (libvirt's default when None) and finds `wanted`,
    /// tried as an ID, then as a UUID, then as a name. The guest's QMP
    /// events and its stopping go to `notices`; a lost connection is
    /// reported on `losses` (see `keep_connected`).
    pub fn open(
        uri: Option<&str>,
        wanted: &str,
        notices: Sender<Notice>,
        losses: Sender<Reconnect>,
    ) -> Result<Guest> {
        let connection = Connect::open(uri).map_err(|source| Error::Connect {
            uri: uri.map(str::to_owned),
            source,
        })?;
        let actual_uri = connection
            .uri()
            .unwrap_or_else(|_| uri.unwrap_or_default().to_owned());
        let driver = connection.driver_type().map_err(|source| Error::Libvirt {
            what: format!("cannot ask '{actual_uri}' for its driver"),
            source,
        })?;
        if driver != "QEMU" {
            return Err(Error::NotQemu {
                uri: actual_uri,
                driver,
            });
        }
        let domain = lookup(&connection, wanted).map_err(|source| {
            if is_code(&source, ErrorNumber::NoDomain) {
                Error::DomainNotFound {
                    domain: wanted.to_owned(),
                    uri: actual_uri.clone(),
                    reason: source.message().to_owned(),
                }
            } else {
                Error::Libvirt {
                    what: format!("cannot look up domain '{wanted}' on '{actual_uri}'"),
                    source,
                }
            }
        })?;
        let name = domain.name().unwrap_or_else(|_| wanted.to_owned());
        if !domain.is_active().unwrap_or(false) {
            return Err(Error::NotRunning { domain: name });
        }
        let uuid = domain.uuid_string().map_err(|source| Error::Libvirt {
            what: format!("cannot read the UUID of domain '{name}'"),
            source,
        })?;
        let watch =
            watch(&connection, &domain, &notices, &losses, 0).map_err(|source| Error::Libvirt {
                what: format!("cannot receive the events of domain '{name}'"),
                source,
            })?;
        // It may have stopped before the lifecycle registration took effect.
        if !domain.is_active().unwrap_or(false) {
            return Err(Error::NotRunning { domain: name });
        }
        Ok(Guest {
            requested_uri: uri.map(str::to_owned),
            uri: actual_uri,
            name,
            uuid,
            link: Mutex::new(Some(Link {
                generation: 0,
                _watch: watch,
                domain,
                connection,
            })),
            connected: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            notices,
            losses,
        })
    }

    /// The `return` member of the guest's `query-version`, as compact JSON.
    pub fn version(&self) -> Result<String> {
        let guest_error = |what: String| Error::Guest {
            domain: self.name.clone(),
            what,
        };
        let reply = self
            .execute(r#"{"execute":"query-version"}"#, Vec::new())
            .map_err(|failure| guest_error(format!("query-version failed: {}", failure.desc)))?;
        crate::qmp::version_from_reply(&reply.text).map_err(guest_error)
    }

    /// Serves `Reconnect` requests until told to quit: each loss is met by
    /// reconnecting with backoff for up to `timeout`. Tells `notices` when
    /// the guest turns out to be gone or the time runs out.
    pub fn keep_connected(&self, requests: &Receiver<Reconnect>, timeout: Duration) {
        while let Ok(Reconnect::Lost(generation)) = requests.recv() {
            if generation != self.generation.load(Ordering::Acquire)
                || !self.connected.swap(false, Ordering::AcqRel)
            {
                continue;
            }
            warn!(
                "lost the libvirt connection to '{}'; reconnecting",
                self.uri
            );
            // Waits for a call still failing on the dead connection.
            let dead = self.lock_link().take();
            drop(dead);
            let notice = match self.reconnect(requests, timeout) {
                Outcome::Running => {
                    info!("reconnected to '{}'", self.uri);
                    continue;
                }
                Outcome::GuestGone => Notice::GuestStopped,
                Outcome::GaveUp => Notice::LibvirtLost,
                Outcome::Quit => return,
            };
            let _ = self.notices.send(notice);
            return;
        }
    }

    fn reconnect(&self, requests: &Receiver<Reconnect>, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_RETRY;
        while Instant::now() < deadline {
            match self.connect_again() {
                Ok(Some(link)) => {
                    self.generation.store(link.generation, Ordering::Release);
                    *self.lock_link() = Some(link);
                    self.connected.store(true, Ordering::Release);
                    return Outcome::Running;
                }
                Ok(None) => return Outcome::GuestGone,
                Err(e) => debug!("reconnecting to '{}': {}", self.uri, e.message()),
            }
            let wait = pause.min(deadline.saturating_duration_since(Instant::now()));
            match requests.recv_timeout(wait) {
                Ok(Reconnect::Quit) | Err(RecvTimeoutError::Disconnected) => return Outcome::Quit,
                Ok(Reconnect::Lost(_)) | Err(RecvTimeoutError::Timeout) => {}
            }
            pause = (pause * 2).min(LONGEST_RETRY);
        }
        Outcome::GaveUp
    }

    /// One attempt: a new connection, the same guest (by UUID), running.
    /// Ok(None) when the guest no longer runs.
    fn connect_again(&self) -> std::result::Result<Option<Link>, virt::error::Error> {
        let connection = Connect::open(self.requested_uri.as_deref())?;
        let domain = match connection.lookup_domain_by_uuid_string(&self.uuid) {
            Ok(domain) => domain,
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !domain.is_active()? {
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let watch = watch(
            &connection,
            &domain,
            &self.notices,
            &self.losses,
            generation,
        )?;
        Ok(Some(Link {
            generation,
            _watch: watch,
            domain,
            connection,
        }))
    }

    fn lock_link(&self) -> MutexGuard<'_, Option<Link>> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Registers for the guest's events and, where libvirt supports it
/// (not the embedded driver), keepalive and the close callback.
fn watch(
    connection: &Connect,
    domain: &Domain,
    notices: &Sender<Notice>,
    losses: &Sender<Reconnect>,
    generation: u64,
) -> std::result::Result<Watch, virt::error::Error> {
    let lifecycle = ffi::LifecycleEvents::register(connection, domain, notices.clone())?;
    let monitor = ffi::MonitorEvents::register(connection, domain, notices.clone())?;
    let close = match connection.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) {
        Ok(()) => {
            let losses = losses.clone();
            let on_close = Box::new(move || {
                let _ = losses.send(Reconnect::Lost(generation));
            });
            Some(ffi::CloseWatch::register(connection, on_close)?)
        }
        Err(e) => {
            debug!("no keepalive on this connection: {}", e.message());
            None
        }
    };
    Ok(Watch {
        _monitor: monitor,
        _lifecycle: lifecycle,
        _close: close,
    })
}

impl Monitor for Guest {
    fn execute(&self, command: &str, files: Vec<OwnedFd>) -> std::result::Result<Reply, Failure> {
        let lost = || Failure {
            desc: CONNECTION_LOST.to_owned(),
        };
        if !self.connected.load(Ordering::Acquire) {
            return Err(lost());
        }
        let link = self.lock_link();
        let Some(Link {
            domain,
            connection,
            generation,
            ..
        }) = link.as_ref()
        else {
            return Err(lost());
        };
        let result = if files.is_empty() {
            domain
                .qemu_monitor_command(command, 0)
                .map(|text| (text, Vec::new()))
        } else {
            ffi::monitor_command_with_files(domain, command, &files)
        };
        match result {
            Ok((text, files)) => Ok(Reply { text, files }),
            // The call failed because the connection died under it.
            Err(_) if !connection.is_alive().unwrap_or(false) => {
                let _ = self.losses.send(Reconnect::Lost(*generation));
                Err(lost())
            }
            Err(e) => Err(Failure {
                desc: e.message().to_owned(),
            }),
        }
    }
}

fn lookup(connection: &Connect, wanted: &str) -> std::result::Result<Domain, virt::error::Error> {
    let mut first_miss = None;
    let mut remember = |e: virt::error::Error| -> std::result::Result<(), virt::error::Error> {
        if !is_code(&e, ErrorNumber::NoDomain) {
            return Err(e);
        }
        first_miss.get_or_insert(e);
        Ok(())
    };
    if let Some(id) = wanted
        .parse::<u32>()
        .ok()
        .filter(|_| wanted.bytes().all(|b| b.is_ascii_digit()))
    {
        match connection.lookup_domain_by_id(id) {
            Ok(domain) => return Ok(domain),
            Err(e) => remember(e)?,
        }
    }
    if looks_like_uuid(wanted) {
        match connection.lookup_domain_by_uuid_string(wanted) {
            Ok(domain) => return Ok(domain),
            Err(e) => remember(e)?,
        }
    }
    match connection.lookup_domain_by_name(wanted) {
        Ok(domain) => Ok(domain),
        Err(e) => {
            remember(e.clone())?;
            Err(first_miss.unwrap_or(e))
        }
    }
}

/// 36 characters with dashes at 8, 13, 18 and 23, or 32 hex digits.
fn looks_like_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.len() {
        32 => bytes.iter().all(u8::is_ascii_hexdigit),
        36 => bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

fn is_code(error: &virt::error::Error, code: ErrorNumber) -> bool {
    matches!(error.code(), Enum::Known(known) if known == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shapes_are_recognised() {
        assert!(looks_like_uuid("c7a5fdbd-cdaf-9455-926a-d65c16db1809"));
        assert!(looks_like_uuid("c7a5fdbdcdaf9455926ad65c16db1809"));
        assert!(!looks_like_uuid("c7a5fdbd-cdaf-9455-926a-d65c16db180"));
        assert!(!looks_like_uuid("c7a5fdbd_cdaf-9455-926a-d65c16db1809"));
        assert!(!looks_like_uuid("tiny"));
        assert!(!looks_like_uuid("123"));
    }
}
