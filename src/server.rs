// SPDX-License-Identifier: LGPL-2.1-or-later
//! The server: start-up, the accept loop, the client registry, event
//! fan-out and an orderly shutdown.
//!
//! Threads: `signals` and libvirt's `events` loop feed one notice channel;
//! `fanout` turns notices into event lines for negotiated clients or into
//! a stop; each client has a reader `client-N` and a writer `client-N-out`.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::Config;
use crate::client::{self, Peer};
use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::libvirt::{self, Awaited, Guest};
use crate::monitor::Monitor;
use crate::notice::Notice;
use crate::output::{Delivery, Output};
use crate::qmp::{GuestCommands, Policy};
use crate::socket::{self, Access, Socket};
use crate::systemd::{self, Passed};
use crate::{ffi, qmp, sync};

/// Least time between two returns of freed memory to the system while
/// clients come and go.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// How long clients get to receive what is queued for them at shutdown.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Why serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A termination signal.
    Signal(i32),
    /// The guest stopped.
    GuestStopped,
    /// libvirt went away for longer than the reconnect timeout.
    LibvirtLost,
    /// Every notice sender went away (only tests do that).
    NoticesClosed,
    /// No client for the idle timeout.
    Idle,
}

/// How long the process waits, once serving has ended, for libvirt to let
/// go of the guest: a hung daemon must not keep the process alive.
const TEARDOWN_TIME: Duration = Duration::from_millis(500);

/// What the start-up thread and the signal thread tell the main thread
/// while no guest is served.
enum Startup {
    /// The guest runs and is ready (None: with --wait, it is gone).
    Ready(Result<Option<(Guest, String)>>),
    Signal(i32),
}

/// Why the proxy stops.
enum Ending {
    Served(Stop),
    /// A signal while no guest was served.
    Signal(i32),
    /// With --wait: the domain was undefined, or a transient one stopped.
    Gone,
    /// With --wait: nobody connected while the guest was down.
    Idle,
}

/// Runs the proxy described by `config` until a signal or the guest stops
/// (with --wait: until it is gone).
pub fn run(config: &Config) -> Result<()> {
    // Before anything opens a descriptor or starts a thread: the passed
    // sockets sit at fixed numbers, and their variables are unset.
    let mut passed = systemd::listen_fds()?;
    let notifier = systemd::notifier();
    if passed.read_only.is_some() && config.read_only_group.is_some() {
        return Err(Error::Usage(
            "--read-only-group cannot change a socket passed by systemd: \
             set SocketGroup= and SocketMode= in its unit"
                .into(),
        ));
    }
    // signal-hook wants its handlers in place before any thread starts.
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| Error::Io {
        what: "cannot handle signals",
        source,
    })?;
    // Checked before anything slow starts: a typo is told at once.
    let read_only_access = match &config.read_only_group {
        Some(group) => Access::Group(socket::resolve_group(group)?),
        None => Access::Private,
    };
    libvirt::quiet(config.level);
    ffi::share_malloc_arena();
    ffi::raise_open_file_limit();
    let (notices, mut inbox) = mpsc::channel();
    let (startup, started) = mpsc::channel();
    watch_signals(signals, notices.clone(), startup.clone())?;
    let event_loop = EventLoop::start()?;
    let commands = Arc::new(GuestCommands::new());
    // With --wait the sockets listen at once: clients wait in the backlog
    // until the guest runs.
    let mut sockets = match config.wait {
        true => Some(listen(config, read_only_access, &mut passed, None)?),
        false => None,
    };
    if sockets.is_some() {
        // systemd would kill a unit that waits for a guest before it is ready.
        notifier.ready();
    }
    let options = Options {
        max_clients: config.max_clients,
        idle: config.idle_timeout.map(|limit| (limit, notices.clone())),
    };
    let mut first = true;
    let ending = loop {
        start_up(
            config,
            notices.clone(),
            Arc::clone(&commands),
            startup.clone(),
            first,
        )?;
        first = false;
        notifier.status(&format!("waiting for domain '{}' to run", config.domain));
        let (guest, greeting) = match wait_started(&started, config, sockets.as_deref())? {
            Ok(Some(ready)) => ready,
            Ok(None) => break Ending::Gone,
            Err(ending) => break ending,
        };
        let guest = Arc::new(guest);
        let sockets = match &mut sockets {
            Some(sockets) => sockets,
            None => sockets.insert(listen(config, read_only_access, &mut passed, Some(&guest))?),
        };
        notifier.ready();
        notifier.status(&format!("serving domain '{}' ({})", guest.name, guest.uri));
        let endpoints = endpoints(sockets);
        let monitor = Arc::clone(&guest) as Arc<dyn Monitor>;
        let served = serve_all(
            &endpoints,
            monitor,
            Arc::clone(&commands),
            greeting,
            inbox,
            &options,
        );
        let uri = guest.uri.clone();
        let_go(guest);
        let (stop, back) = served?;
        inbox = back;
        match stop {
            Stop::GuestStopped if config.wait => {
                info!(
                    "domain '{}' stopped; waiting for it to start again",
                    config.domain
                );
            }
            Stop::LibvirtLost => {
                return Err(Error::ConnectionLost {
                    uri,
                    timeout: config.reconnect_timeout,
                })
            }
            stop => break Ending::Served(stop),
        }
    };
    notifier.stopping();
    drop(sockets);
    let_go(event_loop);
    match ending {
        Ending::Served(Stop::Signal(signal)) | Ending::Signal(signal) => {
            info!("received signal {signal}; stopped")
        }
        Ending::Served(Stop::GuestStopped) => {
            info!("domain '{}' stopped; exiting", config.domain)
        }
        Ending::Served(Stop::Idle) | Ending::Idle => info!(
            "no client for {} s; exiting",
            config.idle_timeout.unwrap_or_default().as_secs()
        ),
        Ending::Gone => info!("domain '{}' is gone; exiting", config.domain),
        Ending::Served(Stop::LibvirtLost | Stop::NoticesClosed) => {}
    }
    Ok(())
}

/// Opens libvirt, finds the guest and asks its version on the `startup`
/// thread (with --wait, after waiting for the guest to run): each can hang
/// on a stopped daemon or QEMU, so the thread is abandoned if a signal
/// comes first. It reports on `startup`.
fn start_up(
    config: &Config,
    notices: Sender<Notice>,
    commands: Arc<GuestCommands>,
    startup: Sender<Startup>,
    first: bool,
) -> Result<()> {
    let (uri, domain, timeout, wait) = (
        config.uri.clone(),
        config.domain.clone(),
        config.reconnect_timeout,
        config.wait,
    );
    sync::spawn("startup", None, move || {
        let ready = loop {
            if wait {
                match libvirt::wait_until_running(uri.as_deref(), &domain, first, timeout) {
                    Ok(Awaited::Running) => {}
                    Ok(Awaited::Gone) => break Ok(None),
                    Err(e) => break Err(e),
                }
            }
            let opened = Guest::open(
                uri.as_deref(),
                &domain,
                notices.clone(),
                Some(timeout),
                Arc::clone(&commands),
            );
            match opened {
                // It stopped again before it could be served.
                Err(Error::NotRunning { .. }) if wait => continue,
                opened => {
                    break opened.and_then(|guest| {
                        let greeting = qmp::greeting(&guest.version()?);
                        Ok(Some((guest, greeting)))
                    })
                }
            }
        };
        let _ = startup.send(Startup::Ready(ready));
    })?;
    Ok(())
}

/// Waits for the start-up thread, unless a signal comes first or, with an
/// idle timeout and sockets listening, nobody connects for that long.
fn wait_started(
    started: &Receiver<Startup>,
    config: &Config,
    sockets: Option<&[Listening]>,
) -> Result<std::result::Result<Option<(Guest, String)>, Ending>> {
    let idle = config.idle_timeout.filter(|_| sockets.is_some());
    loop {
        let next = match idle {
            Some(limit) => started.recv_timeout(limit),
            None => started.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(Startup::Ready(ready)) => return ready.map(Ok),
            Ok(Startup::Signal(signal)) => return Ok(Err(Ending::Signal(signal))),
            Err(RecvTimeoutError::Timeout) => {
                let fds: Vec<BorrowedFd> = sockets
                    .unwrap_or_default()
                    .iter()
                    .map(|(socket, ..)| socket.listener.as_fd())
                    .collect();
                // A connection in a backlog counts as a client.
                let waiting = ffi::readable(&fds, Some(Duration::ZERO))
                    .is_ok_and(|ready| ready.contains(&true));
                if !waiting {
                    return Ok(Err(Ending::Idle));
                }
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the signal thread holds a sender"),
        }
    }
}

/// A listening socket with its path and its clients' policy.
type Listening = (Socket, PathBuf, Policy);

fn endpoints(sockets: &[Listening]) -> Vec<Endpoint<'_>> {
    sockets
        .iter()
        .map(|(socket, path, policy)| Endpoint {
            listener: &socket.listener,
            path: path.clone(),
            policy: policy.clone(),
        })
        .collect()
}

/// Creates the main socket and, if asked for, the read-only one, or takes
/// those systemd passed; each with its path and its clients' policy.
fn listen(
    config: &Config,
    read_only_access: Access,
    passed: &mut Passed,
    guest: Option<&Guest>,
) -> Result<Vec<Listening>> {
    let main = match passed.main.take() {
        Some(socket) => {
            systemd::check_path(&config.socket, &socket)?;
            Socket::passed(socket.listener, &socket.path)
        }
        None => Socket::create(&config.socket)?,
    };
    let mut sockets = vec![(
        main,
        config.socket.clone(),
        Policy::new(config.read_only, config.rules.clone()),
    )];
    let read_only = match (passed.read_only.take(), &config.read_only_socket) {
        (Some(socket), given) => {
            // Passed without --read-only-socket: the unit decides.
            let path = given.clone().unwrap_or_else(|| socket.path.clone());
            systemd::check_path(&path, &socket)?;
            Some((Socket::passed(socket.listener, &socket.path), path))
        }
        (None, Some(path)) => Some((Socket::create_with(path, read_only_access)?, path.clone())),
        (None, None) => None,
    };
    if let Some((socket, path)) = read_only {
        sockets.push((socket, path, Policy::new(true, config.rules.clone())));
    }
    let (name, uri) = match guest {
        Some(guest) => (guest.name.as_str(), guest.uri.as_str()),
        None => (
            config.domain.as_str(),
            config.uri.as_deref().unwrap_or("libvirt's default"),
        ),
    };
    for (_, path, policy) in &sockets {
        let access = if policy.is_read_only() {
            " (read-only)"
        } else {
            ""
        };
        info!(
            "listening on '{}'{access} for domain '{name}' ({uri})",
            path.display()
        );
    }
    Ok(sockets)
}

/// Drops what holds libvirt resources (in order) on a thread of its own,
/// waiting for it at most `TEARDOWN_TIME`: deregistering and closing can
/// block on a hung daemon, and the process must still exit on time.
fn let_go(libvirt: impl Send + 'static) {
    let (done, finished) = mpsc::channel();
    let teardown = sync::spawn("teardown", None, move || {
        drop(libvirt);
        let _ = done.send(());
    });
    if teardown.is_ok() && finished.recv_timeout(TEARDOWN_TIME).is_err() {
        warn!(
            "libvirt did not let go within {} ms; exiting anyway",
            TEARDOWN_TIME.as_millis()
        );
    }
}

/// Starts the `signals` thread: a signal ends start-up, or serving.
fn watch_signals(
    mut signals: Signals,
    notices: Sender<Notice>,
    startup: Sender<Startup>,
) -> Result<()> {
    sync::spawn("signals", Some(64 * 1024), move || {
        for signal in signals.forever() {
            let _ = startup.send(Startup::Signal(signal));
            let _ = notices.send(Notice::Signal(signal));
        }
    })?;
    Ok(())
}

/// One listening socket and what its clients may do.
pub struct Endpoint<'a> {
    pub listener: &'a UnixListener,
    /// Where it listens, for the log.
    pub path: PathBuf,
    pub policy: Policy,
}

/// Serves up to `max_clients` clients at once on `listener`, with no
/// restriction, until `notices` says to stop: `serve_all` with one socket.
pub fn serve(
    listener: &UnixListener,
    monitor: Arc<dyn Monitor>,
    greeting: String,
    notices: Receiver<Notice>,
    max_clients: usize,
) -> Result<Stop> {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(PathBuf::from))
        .unwrap_or_default();
    let endpoint = Endpoint {
        listener,
        path,
        policy: Policy::unrestricted(),
    };
    let guest = Arc::new(GuestCommands::new());
    let options = Options {
        max_clients,
        idle: None,
    };
    serve_all(&[endpoint], monitor, guest, greeting, notices, &options).map(|(stop, _)| stop)
}

/// How to serve, besides the sockets.
pub struct Options {
    /// Clients served at once on each socket.
    pub max_clients: usize,
    /// After how long without a client to send `Notice::Idle`, and where.
    pub idle: Option<(Duration, Sender<Notice>)>,
}

/// Serves up to `options.max_clients` clients at once on each of
/// `endpoints`, each socket accepting on a thread of its own, until
/// `notices` says to stop; returns why, and `notices` for the next guest.
/// Then nothing new is read; every command already read is answered and
/// every queued line delivered before the client sees end-of-file, within
/// `DRAIN_TIME`; after it, lines being written are finished and what waits
/// behind them is dropped. Connections beyond `max_clients` wait in their
/// socket's listen backlog, as a second client of QEMU's own server does.
pub fn serve_all(
    endpoints: &[Endpoint],
    monitor: Arc<dyn Monitor>,
    guest: Arc<GuestCommands>,
    greeting: String,
    notices: Receiver<Notice>,
    options: &Options,
) -> Result<(Stop, Receiver<Notice>)> {
    let registry = Arc::new(Registry::default());
    // The accept loops poll the listening sockets and `woken`: a byte on
    // `wake` ends them and leaves the sockets intact, so that with --wait
    // the next guest is served on the same ones.
    let (wake, woken) = UnixStream::pair().map_err(|source| Error::Io {
        what: "cannot make the accept loops' wake-up socket",
        source,
    })?;
    let fanout = spawn_fan_out(notices, Arc::clone(&registry), wake, Registry::broadcast)?;
    if let Some((limit, notices)) = &options.idle {
        watch_idle(endpoints, &registry, *limit, notices.clone())?;
    }
    let server = Server {
        monitor,
        guest,
        greeting: Arc::from(greeting),
        registry: Arc::clone(&registry),
        threads: Arc::new(Threads::default()),
        max_clients: options.max_clients,
        woken,
    };
    thread::scope(|scope| {
        for (index, endpoint) in endpoints.iter().enumerate().skip(1) {
            let server = &server;
            let started = thread::Builder::new()
                .name(format!("accept-{index}"))
                .spawn_scoped(scope, move || server.accept(index, endpoint));
            if let Err(e) = started {
                error!("cannot serve '{}': {e}", endpoint.path.display());
                server.registry.stop();
            }
        }
        if let Some(first) = endpoints.first() {
            server.accept(0, first);
        }
        // Every accept loop ends on the stop; make sure it came.
        server.registry.stop();
    });
    let fanned_out = fanout.join();
    registry.stop_input();
    if !server.threads.wait_until(Instant::now() + DRAIN_TIME) {
        registry.finish_all();
        server.threads.wait_until(Instant::now() + FINISH_TIME);
    }
    fanned_out.map_err(|_| Error::Io {
        what: "the event fan-out stopped",
        source: std::io::Error::other("its thread panicked"),
    })
}

/// Starts the `idle` thread: once no client has been connected for
/// `limit` and none waits in a backlog, it sends `Notice::Idle`.
fn watch_idle(
    endpoints: &[Endpoint],
    registry: &Arc<Registry>,
    limit: Duration,
    notices: Sender<Notice>,
) -> Result<()> {
    let listeners = endpoints
        .iter()
        .map(|endpoint| endpoint.listener.try_clone())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| Error::Io {
            what: "cannot share the listening socket",
            source,
        })?;
    let registry = Arc::clone(registry);
    sync::spawn("idle", Some(64 * 1024), move || {
        while registry.wait_idle(limit) {
            let fds: Vec<BorrowedFd> = listeners.iter().map(|l| l.as_fd()).collect();
            let waiting =
                ffi::readable(&fds, Some(Duration::ZERO)).is_ok_and(|ready| ready.contains(&true));
            if !waiting {
                let _ = notices.send(Notice::Idle);
                return;
            }
            // A connection in a backlog counts as a client.
            registry.touch();
        }
    })?;
    Ok(())
}

/// Client numbers, for the whole process: with --wait they go on counting
/// across guests, so that an audit line names one connection.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// What every accept loop shares.
struct Server {
    monitor: Arc<dyn Monitor>,
    guest: Arc<GuestCommands>,
    greeting: Arc<str>,
    registry: Arc<Registry>,
    threads: Arc<Threads>,
    max_clients: usize,
    /// Readable once serving stops.
    woken: UnixStream,
}

impl Server {
    /// Accepts clients on `endpoint` (number `index`) until the stop.
    fn accept(&self, index: usize, endpoint: &Endpoint) {
        while self.registry.wait_for_room(index, self.max_clients) {
            let fds = [endpoint.listener.as_fd(), self.woken.as_fd()];
            match ffi::readable(&fds, None) {
                // Connections that came meanwhile stay in the backlog.
                Ok(ready) if ready[1] => break,
                Ok(ready) if !ready[0] => continue,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("cannot wait for connections: {e}");
                    self.registry.wait_for_leave(ACCEPT_RETRY);
                    continue;
                }
            }
            match endpoint.listener.accept() {
                Ok((stream, _)) => {
                    let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Err(e) = self.start_client(client, index, endpoint, stream) {
                        warn!("client {client}: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically EMFILE: give clients a moment to go away.
                    warn!("cannot accept a connection: {e}");
                    self.registry.wait_for_leave(ACCEPT_RETRY);
                }
            }
        }
    }

    /// Starts the reader and writer threads of a new client.
    fn start_client(
        &self,
        client: u64,
        index: usize,
        endpoint: &Endpoint,
        stream: UnixStream,
    ) -> std::io::Result<()> {
        let credentials = socket::peer_credentials(&stream)?;
        let output = Arc::new(Output::new(stream.try_clone()?));
        let negotiated = Arc::new(AtomicBool::new(false));
        self.registry
            .add(client, index, Arc::clone(&output), Arc::clone(&negotiated));
        let access = if endpoint.policy.is_read_only() {
            "read-only"
        } else {
            "full access"
        };
        info!(
            "client {client} connected on '{}' ({access}; pid {}, uid {}, gid {})",
            endpoint.path.display(),
            credentials.pid,
            credentials.uid,
            credentials.gid
        );
        // Should a spawn fail, its closure is dropped, and with it the guard.
        let leaving = Leaving {
            client,
            registry: Arc::clone(&self.registry),
            output: Arc::clone(&output),
        };
        self.threads
            .spawn(&format!("client-{client}-out"), move || {
                let leaving = leaving;
                leaving.output.drain();
            })?;
        let closing = Closing(Arc::clone(&output));
        let monitor = Arc::clone(&self.monitor);
        let greeting = Arc::clone(&self.greeting);
        let session = qmp::Session::with_policy(endpoint.policy.clone(), Arc::clone(&self.guest));
        let peer = Peer {
            client,
            pid: credentials.pid,
            uid: credentials.uid,
        };
        self.threads.spawn(&format!("client-{client}"), move || {
            let _closing = closing;
            client::read_commands(
                peer,
                stream,
                &*monitor,
                &greeting,
                &output,
                &negotiated,
                session,
            );
        })
    }
}

/// After the drain time, how long lines being written get to finish; a
/// client still not taking them then is cut when the process exits.
const FINISH_TIME: Duration = Duration::from_millis(250);

/// Longest wait before accepting again after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Starts the fan-out thread, which hands each event line to `deliver`
/// (`Registry::broadcast`, but for tests) until a notice says to stop.
/// However it ends, panics included, the server stops.
fn spawn_fan_out(
    notices: Receiver<Notice>,
    registry: Arc<Registry>,
    wake: UnixStream,
    deliver: fn(&Registry, Arc<str>),
) -> Result<JoinHandle<(Stop, Receiver<Notice>)>> {
    sync::spawn("fanout", Some(256 * 1024), move || {
        let stopping = StopServing { registry, wake };
        let stop = fan_out(&notices, &stopping.registry, deliver);
        (stop, notices)
    })
}

/// Delivers events until a notice says to stop.
fn fan_out(
    notices: &Receiver<Notice>,
    registry: &Registry,
    deliver: fn(&Registry, Arc<str>),
) -> Stop {
    loop {
        match notices.recv() {
            Ok(Notice::Event {
                name,
                seconds,
                micros,
                data,
            }) => deliver(
                registry,
                qmp::event(&name, seconds, micros, data.as_deref()).into(),
            ),
            Ok(Notice::Mark(mark)) => mark.set(),
            Ok(Notice::GuestStopped) => return Stop::GuestStopped,
            Ok(Notice::LibvirtLost) => return Stop::LibvirtLost,
            Ok(Notice::Signal(signal)) => return Stop::Signal(signal),
            Ok(Notice::Idle) => return Stop::Idle,
            Err(_) => return Stop::NoticesClosed,
        }
    }
}

/// Stops the server when dropped: no more clients are accepted.
struct StopServing {
    registry: Arc<Registry>,
    /// Written to wake the accept loops.
    wake: UnixStream,
}

impl Drop for StopServing {
    fn drop(&mut self) {
        self.registry.stop();
        let _ = (&self.wake).write(&[0]);
    }
}

/// Held by a client's reader: when it ends, panics included, no more lines
/// come, so the writer sends what is queued and closes the connection.
struct Closing(Arc<Output>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Held by a client's writer: when it ends, panics included, the
/// connection is shut and the client leaves the registry (and its slot).
struct Leaving {
    client: u64,
    registry: Arc<Registry>,
    output: Arc<Output>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        self.output.cut();
        self.registry.remove(self.client);
        info!("client {} disconnected", self.client);
    }
}

/// The client threads still running. They are detached, so that each
/// releases its stack as it ends, rather than when somebody joins it.
#[derive(Default)]
struct Threads {
    running: Mutex<usize>,
    ended: Condvar,
}

/// Counts one client thread as ended when dropped, panics included.
struct Running(Arc<Threads>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
        self.0.ended.notify_all();
    }
}

impl Threads {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        sync::lock(&self.running)
    }

    /// Starts a client thread with the default stack size: glibc caches
    /// ended threads' stacks up to 40 MiB in all and keeps 16 KiB of each
    /// dirty, so fewer, larger stacks bound what ended clients leave behind.
    fn spawn(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        *self.lock() += 1;
        let running = Running(Arc::clone(self));
        let started = thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _running = running;
            body();
        });
        // On failure the closure, and with it `running`, is dropped.
        started.map(drop)
    }

    /// Waits until every client thread has ended (true) or `deadline`
    /// passes (false).
    fn wait_until(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        let running = sync::wait_while(&self.ended, self.lock(), left, |running| *running > 0);
        *running == 0
    }
}

/// The connected clients, as the accept loop, the fan-out and shutdown see
/// them.
#[derive(Default)]
struct Registry {
    clients: Mutex<Clients>,
    /// Signalled when a client leaves, and at the stop.
    room: Condvar,
    /// When memory was last given back to the system.
    trimmed: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Clients {
    entries: HashMap<u64, Entry>,
    /// When the last client left, or serving began (None: not yet known).
    idle_since: Option<Instant>,
    /// Set once, under the lock, so that no waiter can miss it.
    stopping: bool,
}

impl Clients {
    fn connected(&self, endpoint: usize) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.endpoint == endpoint)
            .count()
    }
}

struct Entry {
    /// Which socket the client came in on.
    endpoint: usize,
    output: Arc<Output>,
    negotiated: Arc<AtomicBool>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        sync::lock(&self.clients)
    }

    fn add(&self, client: u64, endpoint: usize, output: Arc<Output>, negotiated: Arc<AtomicBool>) {
        let entry = Entry {
            endpoint,
            output,
            negotiated,
        };
        self.lock().entries.insert(client, entry);
    }

    /// Forgets a client that has gone, and gives the memory it freed back
    /// to the system: always when the last client leaves, else at most once
    /// a second (a proxy that always has a client must trim too).
    fn remove(&self, client: u64) {
        let mut clients = self.lock();
        clients.entries.remove(&client);
        let last = clients.entries.is_empty();
        if last {
            clients.idle_since = Some(Instant::now());
        }
        drop(clients);
        self.room.notify_all();
        let mut trimmed = sync::lock(&self.trimmed);
        if last || trimmed.is_none_or(|at| at.elapsed() >= TRIM_INTERVAL) {
            *trimmed = Some(Instant::now());
            ffi::release_free_memory();
        }
    }

    /// Waits until no client has been connected for `limit`: true then,
    /// false once stopping.
    fn wait_idle(&self, limit: Duration) -> bool {
        let mut clients = self.lock();
        let mut since = *clients.idle_since.get_or_insert_with(Instant::now);
        loop {
            if clients.stopping {
                return false;
            }
            if clients.entries.is_empty() {
                since = clients.idle_since.unwrap_or(since);
                let left = limit.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return true;
                }
                clients = sync::wait_timeout(&self.room, clients, left);
            } else {
                clients = sync::wait(&self.room, clients);
            }
        }
    }

    /// Counts as a client just now, for the idle timeout.
    fn touch(&self) {
        self.lock().idle_since = Some(Instant::now());
    }

    /// Says that serving ends: no more clients are accepted.
    fn stop(&self) {
        self.lock().stopping = true;
        self.room.notify_all();
    }

    #[cfg(test)]
    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Blocks while `max` clients of socket `endpoint` are connected; false
    /// once stopping. Each socket has its own slots, so that read-only
    /// clients never take the main socket's.
    fn wait_for_room(&self, endpoint: usize, max: usize) -> bool {
        let mut clients = self.lock();
        while clients.connected(endpoint) >= max && !clients.stopping {
            clients = sync::wait(&self.room, clients);
        }
        !clients.stopping
    }

    /// Waits up to `limit` for a client to leave or the stop.
    fn wait_for_leave(&self, limit: Duration) {
        let clients = self.lock();
        if !clients.stopping {
            drop(sync::wait_timeout(&self.room, clients, limit));
        }
    }

    /// Sends `line` to every negotiated client. A client whose queue is
    /// full has stopped reading: it is cut off rather than allowed to stall
    /// the others or grow our memory.
    fn broadcast(&self, line: Arc<str>) {
        let mut cut = Vec::new();
        for (client, entry) in &self.lock().entries {
            if !entry.negotiated.load(Ordering::Acquire) {
                continue;
            }
            traffic!("client {client} <- {}", line.trim_end());
            if entry.output.event(&line) == Delivery::Overflow {
                entry.output.cut();
                cut.push(*client);
            }
        }
        // Logged outside the lock: a slow stderr must not hold up clients.
        for client in cut {
            warn!("client {client}: not reading its replies; disconnected");
        }
    }

    /// Stops every client's input: each reader answers the commands it has
    /// read, then its writer sends what is queued and closes.
    fn stop_input(&self) {
        for entry in self.lock().entries.values() {
            entry.output.stop_input();
        }
    }

    /// Ends every remaining connection without cutting a line.
    fn finish_all(&self) {
        for entry in self.lock().entries.values() {
            entry.output.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_fan_out_still_stops_the_server() {
        let path = std::env::temp_dir().join(format!("vqmp-fanout-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let registry = Arc::new(Registry::default());
        let (notices, receiver) = mpsc::channel();
        let (wake, woken) = UnixStream::pair().unwrap();
        let fanout = spawn_fan_out(receiver, Arc::clone(&registry), wake, |_, _| {
            panic!("a delivery that panics")
        })
        .unwrap();
        notices
            .send(Notice::Event {
                name: "STOP".into(),
                seconds: 1,
                micros: 2,
                data: None,
            })
            .unwrap();
        assert!(fanout.join().is_err(), "the fan-out should have panicked");
        assert!(registry.stopping());
        assert!(!registry.wait_for_room(0, 0), "the accept loop would wait");
        // The accept loops' wake-up socket is readable, the listener intact.
        let ready = ffi::readable(&[woken.as_fd()], Some(Duration::from_secs(10))).unwrap();
        assert_eq!(ready, [true]);
        drop(listener);
    }
}
