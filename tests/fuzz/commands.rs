// SPDX-License-Identifier: LGPL-2.1-or-later
//! The commands the stream generator (tests/fuzz/generator.rs) sends, with
//! their parameters: only commands whose answers do not depend on the
//! guest (errors about arguments or about objects that do not exist, and
//! static queries), so that QEMU's `-M none` oracle and the test guest
//! answer them alike. Nothing here changes a guest or reads its state.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    /// A string: generated text, which names nothing that exists, or one of
    /// these values (which read only static information).
    Name(&'static [&'static str]),
    /// An absolute QOM path that resolves to nothing.
    Path,
    Integer,
    Boolean,
    /// A human monitor command line that reads nothing of the guest.
    Hmp,
}

pub(super) struct Spec {
    pub(super) name: &'static str,
    /// (name, type, required)
    pub(super) params: &'static [(&'static str, Param, bool)],
    /// Percent weight of the command among the known ones.
    pub(super) weight: u32,
    /// Answers from the state of the QEMU process unless called with its
    /// required arguments (query-command-line-options without `option`
    /// lists the option groups registered so far, which grow when, say,
    /// qom-list-types first initialises every class): only in clean
    /// streams, where no other piece can cut its arguments, and always
    /// with them.
    pub(super) fragile: bool,
}

/// Type names whose properties are static.
pub(super) const TYPE_NAMES: &[&str] = &[
    "virtio-net-pci",
    "e1000",
    "isa-serial",
    "memory-backend-file",
    "secret",
    "pc-i440fx-7.2-machine",
    "device",
];

/// Commands whose answers do not depend on the guest: errors about
/// arguments or missing objects, and static queries.
pub(super) const COMMANDS: &[Spec] = &[
    Spec {
        name: "query-version",
        params: &[],
        weight: 14,
        fragile: false,
    },
    Spec {
        name: "query-target",
        params: &[],
        weight: 4,
        fragile: false,
    },
    Spec {
        name: "query-fdsets",
        params: &[],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "query-commands",
        params: &[],
        weight: 1,
        fragile: false,
    },
    Spec {
        name: "query-qmp-schema",
        params: &[],
        weight: 1,
        fragile: false,
    },
    Spec {
        name: "qom-list-types",
        params: &[
            (
                "implements",
                Param::Name(&["device", "netdev", "Zx"]),
                false,
            ),
            ("abstract", Param::Boolean, false),
        ],
        weight: 1,
        fragile: false,
    },
    Spec {
        name: "query-machines",
        params: &[],
        weight: 1,
        fragile: false,
    },
    Spec {
        name: "query-cpu-definitions",
        params: &[],
        weight: 1,
        fragile: false,
    },
    Spec {
        name: "query-command-line-options",
        params: &[(
            "option",
            Param::Name(&["drive", "machine", "chardev"]),
            true,
        )],
        weight: 3,
        fragile: true,
    },
    Spec {
        name: "device_del",
        params: &[("id", Param::Name(&[]), true)],
        weight: 10,
        fragile: false,
    },
    Spec {
        name: "qom-get",
        params: &[
            ("path", Param::Path, true),
            ("property", Param::Name(&["type"]), true),
        ],
        weight: 8,
        fragile: false,
    },
    Spec {
        name: "qom-list",
        params: &[("path", Param::Path, true)],
        weight: 4,
        fragile: false,
    },
    Spec {
        name: "remove-fd",
        params: &[
            ("fdset-id", Param::Integer, true),
            ("fd", Param::Integer, false),
        ],
        weight: 8,
        fragile: false,
    },
    Spec {
        name: "closefd",
        params: &[("fdname", Param::Name(&[]), true)],
        weight: 4,
        fragile: false,
    },
    Spec {
        name: "getfd",
        params: &[("fdname", Param::Name(&[]), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "object-del",
        params: &[("id", Param::Name(&[]), true)],
        weight: 4,
        fragile: false,
    },
    Spec {
        name: "chardev-remove",
        params: &[("id", Param::Name(&[]), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "netdev_del",
        params: &[("id", Param::Name(&[]), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "blockdev-del",
        params: &[("node-name", Param::Name(&[]), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "qom-list-properties",
        params: &[("typename", Param::Name(TYPE_NAMES), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "device-list-properties",
        params: &[("typename", Param::Name(TYPE_NAMES), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "trace-event-get-state",
        params: &[("name", Param::Name(&["qmp_*", "Zz*", "*Z"]), true)],
        weight: 3,
        fragile: false,
    },
    Spec {
        name: "human-monitor-command",
        params: &[("command-line", Param::Hmp, true)],
        weight: 2,
        fragile: true,
    },
];

/// Human monitor command lines that read nothing of the guest.
pub(super) const HMP_LINES: &[&str] = &["info version", "Zz", "info Zz", "", "help Zz"];

/// Names of no QEMU command.
pub(super) const UNKNOWN_NAMES: &[&str] = &[
    "nope",
    "",
    " ",
    "Query-version",
    "query-version ",
    "query_version",
    "qmp_capabilitieS",
    "QMP_CAPABILITIES",
    "exec-oob",
    "execute",
    "x-Zz",
    "query-versioné",
    "😀",
];
