# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make            build the release binary (cargo build --release)
# make check      install the libvirt/QEMU test bed if missing (scripts/testbed-setup,
#                 needs root or sudo), run every test, then lint
# make lint       rustfmt, clippy and the man page
# make demo       a scripted QMP session through the proxy, with a throwaway guest
# make bench      the benchmarks (scripts/bench)
# make install    copy what `make` built; never runs cargo (DESTDIR, PREFIX, BINDIR, MANDIR)
# make uninstall  remove what `make install` copied

PROG        = virt-qemu-qmp-proxy
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
CARGO      ?= cargo
CARGOFLAGS ?= --locked
INSTALL    ?= install
DESTDIR    ?=
# Where cargo puts its output; follows CARGO_TARGET_DIR when it is set.
TARGETDIR  ?= $(or $(CARGO_TARGET_DIR),target)

BIN        = $(TARGETDIR)/release/$(PROG)
MANPAGE    = man/$(PROG).1

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

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/$(PROG) $(DESTDIR)$(MANDIR)/man1/$(PROG).1

clean:
	$(CARGO) clean

.PHONY: all check lint demo fuzz bench soak install uninstall clean
