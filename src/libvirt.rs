// SPDX-License-Identifier: LGPL-2.1-or-later
//! The libvirt side: open the connection, find the guest, check it is a
//! running QEMU guest, and run monitor commands on it.
//!
//! The connection and domain sit behind a Mutex that is held only for the
//! libvirt call itself, never across client socket I/O. When libvirt goes
//! away, the guest's own `reconnect` thread finds the same guest again by
//! UUID, and only the same QEMU (by ID) counts as the same guest.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use crate::error::{Error, Result};
use crate::ffi::{self, Lifecycle, MonitorEvent};
use crate::log::Level;
use crate::monitor::{Failure, Monitor, Reply};
use crate::notice::{Mark, Notice};
use crate::qmp::GuestCommands;
use crate::{event_loop, qmp, sync, systemd};

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
/// lost: keepalive probes every 2 s, and libvirt closes the connection
/// when 3 go unanswered, that is after interval × (count + 1) = 8 s.
pub const KEEPALIVE_INTERVAL: i32 = 2;
pub const KEEPALIVE_COUNT: u32 = 3;

/// First and longest pause between reconnection attempts.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// The pauses between attempts to reach libvirt again, each twice the
/// last up to `LONGEST_RETRY`, and the time left for them.
struct Retries {
    /// None: no limit.
    deadline: Option<Instant>,
    pause: Duration,
}

impl Retries {
    /// Retries for `timeout` from now; a timeout too large to add is no
    /// limit at all, as is None.
    fn new(timeout: Option<Duration>) -> Retries {
        Retries {
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            pause: FIRST_RETRY,
        }
    }

    /// The time left; None when there is no limit.
    fn left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn expired(&self) -> bool {
        self.left().is_some_and(|left| left.is_zero())
    }

    /// The next pause, cut to the time left.
    fn next_pause(&mut self) -> Duration {
        let pause = self.left().map_or(self.pause, |left| left.min(self.pause));
        self.pause = (self.pause * 2).min(LONGEST_RETRY);
        pause
    }
}

/// How long dropping a `Guest` waits for its reconnect thread, which may be
/// stuck in a libvirt call that cannot be interrupted.
const RECONNECT_QUIT_WAIT: Duration = Duration::from_millis(500);

/// How long a `quit` waits for QEMU's SHUTDOWN event to be seen and
/// delivered; libvirt's own answer (the closed monitor) can take seconds
/// longer while it tears the QEMU process down.
const QUIT_EVENT_WAIT: Duration = Duration::from_secs(10);

/// After libvirt has answered a `quit` with an error, how long its
/// SHUTDOWN event may still take to come.
const QUIT_EVENT_LATE: Duration = Duration::from_secs(1);

/// Longest a reply waits for the events that came during its call to be
/// delivered first: the fan-out takes microseconds, unless it is gone.
const EVENTS_FIRST_WAIT: Duration = Duration::from_millis(100);

/// What QEMU answers to `quit` when it can: libvirt reports the closed
/// monitor instead.
const QUIT_REPLY: &str = r#"{"return":{}}"#;

/// Longest string libvirt's RPC carries (REMOTE_STRING_MAX): a longer
/// command to a daemon is refused by libvirt's client only after it has
/// built its whole request, so it is refused here first.
const REMOTE_STRING_MAX: usize = 4 * 1024 * 1024;

/// A running QEMU guest, reached through a libvirt connection that a
/// thread of its own re-establishes if libvirt goes away.
pub struct Guest {
    /// The URI libvirt actually connected to, for messages.
    pub uri: String,
    /// The guest's name, for messages.
    pub name: String,
    state: Arc<State>,
    /// The reconnect thread says here that it has ended.
    reconnect_ended: Mutex<Receiver<()>>,
}

/// What the guest's users and its reconnect thread share.
struct State {
    /// The URI as given, for reconnecting (None: libvirt's default).
    requested_uri: Option<String>,
    /// The guest is found again by UUID: names can change.
    uuid: String,
    /// A running guest keeps its ID across libvirt restarts and gets a new
    /// one when started again: another ID is another QEMU.
    id: Option<u32>,
    /// None while the connection is down.
    link: Mutex<Option<Link>>,
    /// Cleared as soon as the loss is known, so that commands fail at once
    /// instead of queueing on `link` behind a call that is still failing.
    connected: AtomicBool,
    /// Counts connections, so that a late report about an old one is ignored.
    generation: AtomicU64,
    notices: Sender<Notice>,
    /// The reconnect thread's inbox.
    requests: Sender<Reconnect>,
    /// What the event callback has seen, for replies to wait on.
    seen: Arc<Seen>,
    /// Commands travel over libvirt's RPC (not the embedded driver).
    remote: bool,
    /// Why a command cannot take descriptors over this connection, if so.
    files_refused: Option<String>,
    /// The guest's commands, as `query-commands` lists them.
    commands: Arc<GuestCommands>,
}

/// What the guest's event callback has seen, for the replies that must
/// come after events, as QEMU sends them: how many events in all, and
/// QEMU's SHUTDOWN for a QMP `quit` (reason host-qmp-quit), marked in the
/// notice stream, so that the `quit` can be answered as QEMU does.
#[derive(Default)]
struct Seen {
    events: AtomicU64,
    mark: Mutex<Option<Arc<Mark>>>,
    changed: Condvar,
}

impl Seen {
    fn quit(&self, mark: Arc<Mark>) {
        *sync::lock(&self.mark) = Some(mark);
        self.changed.notify_all();
    }

    /// Whether QEMU's SHUTDOWN for a `quit` came within `limit` and was
    /// delivered to the clients.
    fn confirmed(&self, limit: Duration) -> bool {
        let seen = sync::lock(&self.mark);
        let seen = sync::wait_while(&self.changed, seen, limit, |mark| mark.is_none());
        // Not held while waiting: the event loop's callback takes it.
        let mark = seen.clone();
        drop(seen);
        mark.is_some_and(|mark| mark.wait(limit))
    }
}

/// What a `quit` waits for first.
enum QuitAnswer {
    /// libvirt's answer to the call.
    Called(std::result::Result<Reply, Failure>),
    /// QEMU's SHUTDOWN for it, delivered.
    Confirmed,
}

/// Runs `quit` as QEMU answers it: once QEMU's SHUTDOWN (reason
/// host-qmp-quit) has been delivered, `{"return": {}}`, without waiting
/// for libvirt, which reports the closed monitor as an error, and only
/// after it has torn QEMU down. The call and the wait for the event each
/// run on a thread of their own; whichever ends first answers.
fn quit(
    state: &Arc<State>,
    command: &str,
    files: Vec<OwnedFd>,
) -> std::result::Result<Reply, Failure> {
    let (answer, answers) = mpsc::channel();
    let call = {
        let (state, command, answer) = (Arc::clone(state), command.to_owned(), answer.clone());
        move || {
            let _ = answer.send(QuitAnswer::Called(state.call(&command, files)));
        }
    };
    let waiting = Arc::clone(&state.seen);
    let waited = sync::spawn("quit-event", Some(64 * 1024), move || {
        if waiting.confirmed(QUIT_EVENT_WAIT) {
            let _ = answer.send(QuitAnswer::Confirmed);
        }
    });
    if waited.is_err() || sync::spawn("quit", None, call).is_err() {
        return state.call(command, Vec::new());
    }
    let confirmed = || Reply {
        text: QUIT_REPLY.to_owned(),
        files: Vec::new(),
    };
    match answers.recv() {
        Ok(QuitAnswer::Confirmed) => Ok(confirmed()),
        Ok(QuitAnswer::Called(Ok(reply))) => Ok(reply),
        Ok(QuitAnswer::Called(Err(failure))) => match answers.recv_timeout(QUIT_EVENT_LATE) {
            Ok(QuitAnswer::Confirmed) => Ok(confirmed()),
            _ => Err(failure),
        },
        Err(_) => Err(Failure {
            desc: "the quit command was lost".to_owned(),
        }),
    }
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
    _monitor: ffi::EventRegistration,
    _lifecycle: ffi::EventRegistration,
    _close: Option<ffi::CloseWatch>,
}

/// Work for the thread that re-establishes the connection.
enum Reconnect {
    /// libvirt closed the connection of this generation.
    Lost(u64),
    /// How one attempt to connect again ended.
    Attempt(std::result::Result<Option<Link>, virt::error::Error>),
    /// The guest is being dropped.
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
    /// events and its stopping go to `notices`; when libvirt goes away, a
    /// thread reconnects for up to `reconnect_timeout` (None: for ever) and
    /// sends `Notice::LibvirtLost` or `Notice::GuestStopped` if it cannot.
    /// The guest's command names go to `commands`, now and after each
    /// reconnection.
    pub fn open(
        uri: Option<&str>,
        wanted: &str,
        notices: Sender<Notice>,
        reconnect_timeout: Option<Duration>,
        commands: Arc<GuestCommands>,
    ) -> Result<Guest> {
        let (connection, actual_uri) = connect(uri)?;
        let domain = find(&connection, wanted, &actual_uri)?;
        let name = domain.name().unwrap_or_else(|_| wanted.to_owned());
        if !domain.is_active().unwrap_or(false) {
            return Err(Error::NotRunning { domain: name });
        }
        let uuid = domain.uuid_string().map_err(|source| Error::Libvirt {
            what: format!("cannot read the UUID of domain '{name}'"),
            source,
        })?;
        let (requests, inbox) = mpsc::channel();
        let seen = Arc::new(Seen::default());
        let watch =
            watch(&connection, &domain, &notices, &requests, &seen, 0).map_err(|source| {
                Error::Libvirt {
                    what: format!("cannot receive the events of domain '{name}'"),
                    source,
                }
            })?;
        // It may have stopped before the lifecycle registration took effect.
        if !domain.is_active().unwrap_or(false) {
            return Err(Error::NotRunning { domain: name });
        }
        let state = Arc::new(State {
            requested_uri: uri.map(str::to_owned),
            uuid,
            id: domain.id(),
            link: Mutex::new(Some(Link {
                generation: 0,
                _watch: watch,
                domain,
                connection,
            })),
            connected: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            notices,
            requests,
            seen,
            remote: !actual_uri.starts_with("qemu:///embed"),
            files_refused: fdless_transport(&actual_uri).map(|transport| {
                format!(
                    "file descriptors cannot be passed over libvirt's {transport} transport \
                     ({actual_uri})"
                )
            }),
            commands,
        });
        state.learn_commands();
        let (ended, reconnect_ended) = mpsc::channel();
        let keeper = Arc::clone(&state);
        let uri = actual_uri.clone();
        sync::spawn("reconnect", Some(256 * 1024), move || {
            keeper.keep_connected(&uri, &inbox, reconnect_timeout);
            let _ = ended.send(());
        })?;
        Ok(Guest {
            uri: actual_uri,
            name,
            state,
            reconnect_ended: Mutex::new(reconnect_ended),
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
        qmp::version_from_reply(&reply.text).map_err(guest_error)
    }
}

impl Drop for Guest {
    /// Stops the reconnect thread; a thread stuck in libvirt is left behind.
    fn drop(&mut self) {
        let _ = self.state.requests.send(Reconnect::Quit);
        let _ = sync::lock(&self.reconnect_ended).recv_timeout(RECONNECT_QUIT_WAIT);
    }
}

impl State {
    /// Serves the reconnect inbox until told to quit: each loss is met by
    /// reconnecting with backoff for up to `timeout`. Tells `notices` when
    /// the guest turns out to be gone or the time runs out.
    fn keep_connected(
        self: &Arc<Self>,
        uri: &str,
        inbox: &Receiver<Reconnect>,
        timeout: Option<Duration>,
    ) {
        loop {
            match inbox.recv() {
                Ok(Reconnect::Lost(generation))
                    if generation == self.generation.load(Ordering::Acquire)
                        && self.connected.swap(false, Ordering::AcqRel) => {}
                Ok(Reconnect::Quit) | Err(_) => return,
                Ok(_) => continue,
            }
            warn!("lost the libvirt connection to '{uri}'; reconnecting");
            systemd::notifier()
                .status(&format!("libvirt connection to '{uri}' lost; reconnecting"));
            // Waits for a call still failing on the dead connection.
            let dead = sync::lock(&self.link).take();
            drop(dead);
            let notice = match self.reconnect(uri, inbox, timeout) {
                Outcome::Running => {
                    info!("reconnected to '{uri}'");
                    systemd::notifier().status(&format!("serving again, reconnected to '{uri}'"));
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

    /// Tries to connect again until `timeout` has passed. Each attempt runs
    /// on a thread of its own, as libvirt's open has no timeout and blocks
    /// for as long as a stopped daemon does not answer: the time limit and
    /// `Quit` hold whatever libvirt does.
    fn reconnect(
        self: &Arc<Self>,
        uri: &str,
        inbox: &Receiver<Reconnect>,
        timeout: Option<Duration>,
    ) -> Outcome {
        let mut retries = Retries::new(timeout);
        loop {
            let attempt = Arc::clone(self);
            let started = sync::spawn("reconnect-try", Some(256 * 1024), move || {
                let outcome = attempt.connect_again();
                let _ = attempt.requests.send(Reconnect::Attempt(outcome));
            });
            if let Err(e) = started {
                debug!("reconnecting to '{uri}': {e}");
            } else {
                loop {
                    match receive(inbox, retries.left()) {
                        Ok(Reconnect::Attempt(Ok(Some(link)))) => {
                            self.generation.store(link.generation, Ordering::Release);
                            *sync::lock(&self.link) = Some(link);
                            self.connected.store(true, Ordering::Release);
                            self.learn_commands();
                            return Outcome::Running;
                        }
                        Ok(Reconnect::Attempt(Ok(None))) => return Outcome::GuestGone,
                        Ok(Reconnect::Attempt(Err(e))) => {
                            debug!("reconnecting to '{uri}': {}", e.message());
                            break;
                        }
                        Ok(Reconnect::Lost(_)) => {}
                        Ok(Reconnect::Quit) | Err(RecvTimeoutError::Disconnected) => {
                            return Outcome::Quit
                        }
                        Err(RecvTimeoutError::Timeout) => return Outcome::GaveUp,
                    }
                }
            }
            let wait = retries.next_pause();
            loop {
                match receive(inbox, Some(wait)) {
                    Ok(Reconnect::Quit) | Err(RecvTimeoutError::Disconnected) => {
                        return Outcome::Quit
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Ok(_) => {}
                }
            }
            if retries.expired() {
                return Outcome::GaveUp;
            }
        }
    }

    /// One attempt: a new connection, the same guest (by UUID), running
    /// the same QEMU (by ID). Ok(None) when that QEMU is gone.
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
        if domain.id() != self.id {
            info!(
                "the domain was started again while libvirt was away (ID {} now); \
                 what its clients set up is gone",
                domain.id().map_or("none".to_owned(), |id| id.to_string())
            );
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let watch = watch(
            &connection,
            &domain,
            &self.notices,
            &self.requests,
            &self.seen,
            generation,
        )?;
        Ok(Some(Link {
            generation,
            _watch: watch,
            domain,
            connection,
        }))
    }
}

/// Waits for the next request, for ever when `limit` is None.
fn receive(
    inbox: &Receiver<Reconnect>,
    limit: Option<Duration>,
) -> std::result::Result<Reconnect, RecvTimeoutError> {
    match limit {
        Some(limit) => inbox.recv_timeout(limit),
        None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
    }
}

/// Registers for the guest's events and, where libvirt supports it
/// (not the embedded driver), keepalive and the close callback.
fn watch(
    connection: &Connect,
    domain: &Domain,
    notices: &Sender<Notice>,
    requests: &Sender<Reconnect>,
    seen: &Arc<Seen>,
    generation: u64,
) -> std::result::Result<Watch, virt::error::Error> {
    let stopped = notices.clone();
    let lifecycle = ffi::EventRegistration::lifecycle(
        connection,
        domain,
        Box::new(move |event| {
            if event == Lifecycle::Stopped {
                let _ = stopped.send(Notice::GuestStopped);
            }
        }),
    )?;
    let events = notices.clone();
    let seen = Arc::clone(seen);
    let monitor = ffi::EventRegistration::monitor(
        connection,
        domain,
        Box::new(move |event: MonitorEvent| {
            let quitting = event.name == "SHUTDOWN"
                && event
                    .data
                    .as_deref()
                    .is_some_and(|data| data.contains(r#""reason":"host-qmp-quit""#));
            let _ = events.send(Notice::Event {
                name: event.name,
                seconds: event.seconds,
                micros: event.micros,
                data: event.data,
            });
            seen.events.fetch_add(1, Ordering::Release);
            if quitting {
                let mark = Arc::new(Mark::default());
                let _ = events.send(Notice::Mark(Arc::clone(&mark)));
                seen.quit(mark);
            }
        }),
    )?;
    let close = match connection.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) {
        Ok(()) => {
            let losses = requests.clone();
            let on_close = Box::new(move |()| {
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
        if qmp::runs(command, "quit") {
            return quit(&self.state, command, files);
        }
        let state = &*self.state;
        let before = state.seen.events.load(Ordering::Acquire);
        let reply = state.call(command, files);
        // QEMU sends an event raised by a command (STOP during `stop`)
        // before the command's reply: events that came during the call go
        // out first. libvirt hands an event it read with the reply to a
        // 0 ms timer of the event loop, so that runs first; then the
        // fan-out delivers. Rare, so the common path costs a look at the
        // loop's timers and two atomic loads.
        event_loop::flush(EVENTS_FIRST_WAIT);
        if state.seen.events.load(Ordering::Acquire) != before {
            let mark = Arc::new(Mark::default());
            if state.notices.send(Notice::Mark(Arc::clone(&mark))).is_ok() {
                mark.wait(EVENTS_FIRST_WAIT);
            }
        }
        reply
    }
}

impl State {
    /// Asks the guest which commands it has, for the sessions' policy: a
    /// refused command the guest lacks is "not found", as QEMU says.
    fn learn_commands(&self) {
        let names = self
            .call(r#"{"execute":"query-commands"}"#, Vec::new())
            .map_err(|failure| failure.desc)
            .and_then(|reply| qmp::command_names(&reply.text));
        match names {
            Ok(names) => self.commands.set(names),
            Err(e) => {
                warn!("cannot list the guest's commands: {e}");
                self.commands.forget();
            }
        }
    }

    /// Runs `command` on the guest through libvirt.
    fn call(&self, command: &str, files: Vec<OwnedFd>) -> std::result::Result<Reply, Failure> {
        let lost = || Failure {
            desc: CONNECTION_LOST.to_owned(),
        };
        let state = self;
        if !state.connected.load(Ordering::Acquire) {
            return Err(lost());
        }
        if state.remote && command.len() > REMOTE_STRING_MAX {
            return Err(Failure {
                desc: format!(
                    "the command is {} bytes long; libvirt carries at most {REMOTE_STRING_MAX} \
                     to its daemon",
                    command.len()
                ),
            });
        }
        // Refused before libvirt sees them: it would drop the whole
        // connection, for every client. The files close when dropped.
        if let Some(why) = state.files_refused.as_ref().filter(|_| !files.is_empty()) {
            return Err(Failure { desc: why.clone() });
        }
        let link = sync::lock(&state.link);
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
        if let Err(e) = &result {
            debug!("monitor call failed: {e}");
        }
        match result {
            Ok((text, files)) => Ok(Reply { text, files }),
            // The call failed because the connection died under it.
            Err(_) if !connection.is_alive().unwrap_or(false) => {
                let _ = state.requests.send(Reconnect::Lost(*generation));
                Err(lost())
            }
            Err(e) => Err(Failure {
                desc: e.message().to_owned(),
            }),
        }
    }
}

/// Opens `uri` (libvirt's default when None), which must lead to QEMU;
/// returns the connection and the URI libvirt actually connected to.
fn connect(uri: Option<&str>) -> Result<(Connect, String)> {
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
    Ok((connection, actual_uri))
}

/// Finds the domain `wanted` on `connection` (to `uri`), as `lookup` does.
fn find(connection: &Connect, wanted: &str, uri: &str) -> Result<Domain> {
    lookup(connection, wanted).map_err(|source| {
        if is_code(&source, ErrorNumber::NoDomain) {
            Error::DomainNotFound {
                domain: wanted.to_owned(),
                uri: uri.to_owned(),
                reason: source.message().to_owned(),
            }
        } else {
            Error::Libvirt {
                what: format!("cannot look up domain '{wanted}' on '{uri}'"),
                source,
            }
        }
    })
}

/// How waiting for a domain to run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    Running,
    /// The domain no longer exists: undefined, or a transient one stopped.
    Gone,
}

/// Waits until the domain `wanted` on `uri` runs, told by its lifecycle
/// events (no polling). A domain that does not exist is an error when
/// `first` (as without waiting), and `Gone` later: it was undefined, or a
/// transient guest that stopped. Blocks for as long as the guest is down:
/// run it where it can be abandoned.
///
/// libvirt going away meanwhile (a daemon restarted, or hung past
/// keepalive) is survived as serving survives it: the wait starts again on
/// a new connection, which is tried for up to `reconnect_timeout`.
pub fn wait_until_running(
    uri: Option<&str>,
    wanted: &str,
    first: bool,
    reconnect_timeout: Duration,
) -> Result<Awaited> {
    let mut first = first;
    loop {
        let lost_uri = match watch_until_running(uri, wanted, first)? {
            Watched::Awaited(awaited) => return Ok(awaited),
            Watched::Lost(uri) => uri,
        };
        first = false;
        warn!("lost the libvirt connection to '{lost_uri}' while waiting for domain '{wanted}'; reconnecting");
        reach_again(uri, &lost_uri, reconnect_timeout)?;
    }
}

/// How one watch of a domain that is down ended.
enum Watched {
    Awaited(Awaited),
    /// The connection (to this URI) was lost.
    Lost(String),
}

/// What the watch of a domain that is down hears.
enum Heard {
    Lifecycle(Lifecycle),
    Lost,
}

/// One watch of `wanted`, on a connection of its own with keepalive and
/// the close callback where libvirt has them (not the embedded driver).
fn watch_until_running(uri: Option<&str>, wanted: &str, first: bool) -> Result<Watched> {
    let (connection, actual_uri) = connect(uri)?;
    let domain = match find(&connection, wanted, &actual_uri) {
        Ok(domain) => domain,
        Err(Error::DomainNotFound { .. }) if !first => return Ok(Watched::Awaited(Awaited::Gone)),
        Err(e) => return Err(e),
    };
    let (heard, hearing) = mpsc::channel();
    let lost = heard.clone();
    let _lifecycle = ffi::EventRegistration::lifecycle(
        &connection,
        &domain,
        Box::new(move |event| {
            let _ = heard.send(Heard::Lifecycle(event));
        }),
    )
    .map_err(|source| Error::Libvirt {
        what: format!("cannot receive the events of domain '{wanted}'"),
        source,
    })?;
    let _close = match connection.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) {
        Ok(()) => {
            let on_close = Box::new(move |()| {
                let _ = lost.send(Heard::Lost);
            });
            let close = ffi::CloseWatch::register(&connection, on_close);
            Some(close.map_err(|source| Error::Libvirt {
                what: format!("cannot watch the libvirt connection to '{actual_uri}'"),
                source,
            })?)
        }
        Err(_) => None,
    };
    // Checked after registering, so that a start in between is not missed.
    loop {
        if domain.is_active().unwrap_or(false) {
            return Ok(Watched::Awaited(Awaited::Running));
        }
        if !connection.is_alive().unwrap_or(false) {
            return Ok(Watched::Lost(actual_uri));
        }
        if !domain.is_persistent().unwrap_or(true) {
            return Ok(Watched::Awaited(Awaited::Gone));
        }
        match hearing.recv() {
            Ok(Heard::Lifecycle(Lifecycle::Undefined)) | Err(_) => {
                return Ok(Watched::Awaited(Awaited::Gone))
            }
            Ok(Heard::Lost) => return Ok(Watched::Lost(actual_uri)),
            Ok(Heard::Lifecycle(_)) => {}
        }
    }
}

/// Tries to open `uri` again, with backoff, until it opens or
/// `reconnect_timeout` has passed. Each try runs on a thread of its own,
/// abandoned if it hangs (a stopped daemon accepts, then never answers).
fn reach_again(uri: Option<&str>, lost_uri: &str, reconnect_timeout: Duration) -> Result<()> {
    let mut retries = Retries::new(Some(reconnect_timeout));
    let gave_up = || Error::ConnectionLost {
        uri: lost_uri.to_owned(),
        timeout: reconnect_timeout,
    };
    loop {
        let (opened, opening) = mpsc::channel();
        let requested = uri.map(str::to_owned);
        sync::spawn("reconnect-try", Some(256 * 1024), move || {
            let _ = opened.send(Connect::open(requested.as_deref()).is_ok());
        })?;
        let reached = match retries.left() {
            Some(left) => opening.recv_timeout(left).map_err(|_| gave_up())?,
            None => opening.recv().unwrap_or(false),
        };
        if reached {
            info!("reconnected to '{lost_uri}'");
            return Ok(());
        }
        if retries.expired() {
            return Err(gave_up());
        }
        std::thread::sleep(retries.next_pause());
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

/// The transport of `uri` when it cannot carry file descriptors: libvirt
/// passes them only over a local UNIX socket (`driver://` without a host,
/// `driver+unix://`, the embedded driver), not over tcp, tls, ssh, libssh,
/// libssh2 or ext. Without `+transport`, a host means tls, as in libvirt.
fn fdless_transport(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    match scheme.split_once('+') {
        Some((_, "unix")) => None,
        Some((_, transport)) => Some(transport),
        None if has_host(rest) => Some("tls"),
        None => None,
    }
}

/// Whether the part of a URI after `scheme:` names a host.
fn has_host(rest: &str) -> bool {
    let Some(authority) = rest.strip_prefix("//") else {
        return false;
    };
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    // An IPv6 literal holds colons; anything else ends at the port.
    host.starts_with('[') || !host.split(':').next().unwrap_or_default().is_empty()
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
    fn retries_double_up_to_the_longest_within_their_time() {
        let mut forever = Retries::new(Some(Duration::MAX));
        assert_eq!(forever.left(), None);
        let pauses: Vec<Duration> = (0..8).map(|_| forever.next_pause()).collect();
        let ms = Duration::from_millis;
        assert_eq!(pauses[..3], [ms(100), ms(200), ms(400)]);
        assert_eq!(pauses[7], LONGEST_RETRY);
        assert!(!forever.expired());
        let mut short = Retries::new(Some(ms(50)));
        assert!(short.next_pause() <= ms(50));
        assert!(Retries::new(Some(Duration::ZERO)).expired());
    }

    #[test]
    fn uuid_shapes_are_recognised() {
        assert!(looks_like_uuid("c7a5fdbd-cdaf-9455-926a-d65c16db1809"));
        assert!(looks_like_uuid("c7a5fdbdcdaf9455926ad65c16db1809"));
        assert!(!looks_like_uuid("c7a5fdbd-cdaf-9455-926a-d65c16db180"));
        assert!(!looks_like_uuid("c7a5fdbd_cdaf-9455-926a-d65c16db1809"));
        assert!(!looks_like_uuid("tiny"));
        assert!(!looks_like_uuid("123"));
    }

    #[test]
    fn descriptors_travel_only_over_a_local_socket() {
        for local in [
            "qemu:///system",
            "qemu:///session",
            "qemu+unix:///system",
            "qemu:///system?socket=/tmp/d/libvirt-sock",
            "qemu:///embed?root=/tmp/root",
            "qemu://:16509/system",
            "test:///default",
        ] {
            assert_eq!(fdless_transport(local), None, "{local}");
        }
        for (remote, transport) in [
            ("qemu+tcp://127.0.0.1:16509/system", "tcp"),
            ("qemu+tls://host/system", "tls"),
            ("qemu+ssh://root@host/system", "ssh"),
            ("qemu+libssh://host/system", "libssh"),
            ("qemu+libssh2://host/system?known_hosts=/k", "libssh2"),
            ("qemu+ext:///system?command=/bin/helper", "ext"),
            ("qemu://host/system", "tls"),
            ("qemu://user@host:16514/system", "tls"),
            ("qemu://[::1]/system", "tls"),
        ] {
            assert_eq!(fdless_transport(remote), Some(transport), "{remote}");
        }
    }
}
