// SPDX-License-Identifier: LGPL-2.1-or-later
//! The libvirt side: open the connection, find the guest, check it is a
//! running QEMU guest, and run monitor commands on it.
//!
//! The domain sits behind a Mutex that is held only for the libvirt call
//! itself, never across client socket I/O.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::Sender;
use std::sync::{Mutex, PoisonError};

use serde_json::value::RawValue;
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

/// A running QEMU guest reached through one libvirt connection.
pub struct Guest {
    connection: Connect,
    domain: Mutex<Domain>,
    /// The guest's name, for messages.
    pub name: String,
    /// The URI libvirt actually connected to.
    pub uri: String,
}

/// What keeps the guest's events flowing; dropping it stops them.
pub struct Watch {
    _monitor: ffi::MonitorEvents,
    _lifecycle: ffi::LifecycleEvents,
}

impl Guest {
    /// Connects to `uri` (libvirt's default when None) and finds `wanted`,
    /// tried as an ID, then as a UUID, then as a name.
    pub fn open(uri: Option<&str>, wanted: &str) -> Result<Guest> {
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
        Ok(Guest {
            connection,
            domain: Mutex::new(domain),
            name,
            uri: actual_uri,
        })
    }

    /// Starts sending the guest's QMP events, and its stopping, to `notices`.
    pub fn watch(&self, notices: Sender<Notice>) -> Result<Watch> {
        let domain = self.domain.lock().unwrap_or_else(PoisonError::into_inner);
        let registration_failed = |source| Error::Libvirt {
            what: format!("cannot receive the events of domain '{}'", self.name),
            source,
        };
        let lifecycle = ffi::LifecycleEvents::register(&self.connection, &domain, notices.clone())
            .map_err(registration_failed)?;
        let monitor = ffi::MonitorEvents::register(&self.connection, &domain, notices)
            .map_err(registration_failed)?;
        // It may have stopped before the lifecycle registration took effect.
        if !domain.is_active().unwrap_or(false) {
            return Err(Error::NotRunning {
                domain: self.name.clone(),
            });
        }
        Ok(Watch {
            _monitor: monitor,
            _lifecycle: lifecycle,
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
        let members: HashMap<String, Box<RawValue>> = serde_json::from_str(&reply.text)
            .map_err(|e| guest_error(format!("query-version reply is not a JSON object: {e}")))?;
        match members.get("return") {
            Some(version) => Ok(version.get().to_owned()),
            None => Err(guest_error(format!(
                "query-version answered {}",
                reply.text
            ))),
        }
    }
}

impl Monitor for Guest {
    fn execute(&self, command: &str, files: Vec<OwnedFd>) -> std::result::Result<Reply, Failure> {
        let domain = self.domain.lock().unwrap_or_else(PoisonError::into_inner);
        let result = if files.is_empty() {
            domain
                .qemu_monitor_command(command, 0)
                .map(|text| (text, Vec::new()))
        } else {
            ffi::monitor_command_with_files(&domain, command, &files)
        };
        drop(domain);
        drop(files);
        match result {
            Ok((text, files)) => Ok(Reply { text, files }),
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
