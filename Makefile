# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make            build the release binary (cargo build --release)
# make check      install the libvirt/QEMU test bed if missing (scripts/testbed-setup,
#                 needs root or sudo), run every test, then lint
# make lint       rustfmt, clippy, the man page and the systemd units
# make demo       a scripted QMP session through the proxy, with a throwaway guest
# make bench      the benchmarks (scripts/bench)
# make install    copy what `make` built and the systemd units; never runs cargo
#                 (DESTDIR, PREFIX, BINDIR, MANDIR, UNITDIR)
# make uninstall  remove what `make install` copied

PROG        = virt-qemu-qmp-proxy
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
CARGO      ?= cargo
CARGOFLAGS ?= --locked
INSTALL    ?= install
PKG_CONFIG ?= pkg-config
DESTDIR    ?=
# systemd's own answer where it has one (/lib/systemd/system on Debian 12).
UNITDIR    ?= $(or $(shell $(PKG_CONFIG) --variable=systemdsystemunitdir systemd 2>/dev/null),$(PREFIX)/lib/systemd/system)
# Where cargo puts its output; follows CARGO_TARGET_DIR when it is set.
TARGETDIR  ?= $(or $(CARGO_TARGET_DIR),target)

BIN        = $(TARGETDIR)/release/$(PROG)
MANPAGE    = man/$(PROG).1
SOCKETS    = $(PROG)@.socket $(PROG)-ro@.socket
SERVICE    = $(PROG)@.service

# The scripts get the same cargo as the targets here.
export CARGO CARGOFLAGS

all:
	$(CARGO) build --release $(CARGOFLAGS)

check:
	bash scripts/testbed-setup
	$(CARGO) test $(CARGOFLAGS) --no-fail-fast -- --include-ignored
	$(MAKE) --no-print-directory lint

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy $(CARGOFLAGS) --all-targets -- -D warnings
	@if [ -f $(MANPAGE) ]; then \
		echo "groff -man -ww -z $(MANPAGE)"; \
		out=$$(groff -man -ww -z $(MANPAGE) 2>&1); \
		if [ -n "$$out" ]; then printf '%s\n' "$$out" >&2; exit 1; fi; \
	fi
	@$(MAKE) --no-print-directory lint-units

# The units of a staged install, instances of them, as systemd would load
# them; no systemd needs to run. ExecStart must name an executable, so the
# stage holds a stand-in at BINDIR: lint never builds the release binary.
# Warnings (unknown keys...) fail too.
lint-units:
	@command -v systemd-analyze >/dev/null || { \
		echo "systemd-analyze is missing: install the 'systemd' package (scripts/testbed-setup does)" >&2; \
		exit 1; }
	@set -e; stage=$$(mktemp -d); trap 'rm -rf "$$stage"' EXIT; \
	$(MAKE) --no-print-directory -s install-units DESTDIR="$$stage" BINDIR="$$stage$(BINDIR)"; \
	$(INSTALL) -d "$$stage$(BINDIR)"; \
	printf '#!/bin/sh\nexit 1\n' >"$$stage$(BINDIR)/$(PROG)"; \
	chmod 755 "$$stage$(BINDIR)/$(PROG)"; \
	units="$(PROG)@test.service $(PROG)@test.socket $(PROG)-ro@test.socket"; \
	echo "systemd-analyze verify --man=no $$units"; \
	rc=0; out=$$(SYSTEMD_UNIT_PATH="$$stage$(UNITDIR):" systemd-analyze verify --man=no $$units 2>&1) || rc=$$?; \
	if [ $$rc -ne 0 ] || [ -n "$$out" ]; then printf '%s\n' "$$out" >&2; exit 1; fi

demo:
	bash scripts/demo

# make fuzz       a longer differential fuzzing run against QEMU (scripts/fuzz):
#                 SEED (default random), N (streams, default 20000), FIRST
fuzz:
	SEED="$(SEED)" N="$(N)" FIRST="$(FIRST)" bash scripts/fuzz

bench:
	@if [ -f scripts/bench ]; then \
		echo "bash scripts/bench"; bash scripts/bench; \
	else \
		echo "no benchmarks yet: scripts/bench does not exist" >&2; exit 1; \
	fi

# make soak       the full soak (tests/soak.rs, release build): 64 clients of 5000
#                 commands each, 7-9 min; QMP_SOAK_CLIENTS, QMP_SOAK_COMMANDS,
#                 QMP_SOAK_SEED... change it (make check runs a short one)
soak:
	bash scripts/testbed-setup
	QMP_SOAK_CLIENTS=$${QMP_SOAK_CLIENTS:-64} QMP_SOAK_COMMANDS=$${QMP_SOAK_COMMANDS:-5000} \
		$(CARGO) test $(CARGOFLAGS) --release --test soak -- --include-ignored --nocapture

install:
	@test -f $(BIN) || { echo "$(BIN) is missing: run 'make' first" >&2; exit 1; }
	$(INSTALL) -Dm755 $(BIN) $(DESTDIR)$(BINDIR)/$(PROG)
	$(INSTALL) -Dm644 $(MANPAGE) $(DESTDIR)$(MANDIR)/man1/$(PROG).1
	@$(MAKE) --no-print-directory install-units

# The units alone, with BINDIR in ExecStart; part of install.
install-units:
	$(INSTALL) -d $(DESTDIR)$(UNITDIR)
	$(INSTALL) -m644 $(addprefix systemd/,$(SOCKETS)) $(DESTDIR)$(UNITDIR)/
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/$(SERVICE).in >$(DESTDIR)$(UNITDIR)/$(SERVICE)
	chmod 644 $(DESTDIR)$(UNITDIR)/$(SERVICE)

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/$(PROG) $(DESTDIR)$(MANDIR)/man1/$(PROG).1
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(SOCKETS) $(SERVICE))

clean:
	$(CARGO) clean

.PHONY: all check lint lint-units demo fuzz bench soak install install-units uninstall clean
