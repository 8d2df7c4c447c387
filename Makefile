# doze: build, test, demo, bench, install.  Run as root, or as a user with sudo: the targets that
# create kernel objects or install packages re-run themselves under sudo. `make setup` installs
# everything once; demo and test install what they need themselves when something is missing.
SHELL := /bin/bash
ARCH := $(shell uname -m)
CLANG ?= clang
# Pinned flags: BPF target, CO-RE-free, warnings are errors (cilium/ebpf style).
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -mcpu=v3 -I/usr/include/$(ARCH)-linux-gnu
BPF_SRC := $(wildcard agent/bpf/*.bpf.c)
BPF_OBJ := $(BPF_SRC:.c=.o)
TS_SRC := $(shell find cli.ts agent plugin demo -name '*.ts' 2>/dev/null)
PREFIX ?= /usr/local

.PHONY: all setup build check test test-live demo bench clean check-tools check-test-tools guest check-guest-tools install uninstall docs dist image

all: build

# Without root, for every change: types (tsc over agent/, tests, bench, demo) and every test that
# needs no root, kernel object or external binary (picked by scripts/check-tests.mjs). There is no
# linter: tsc's strict flags (noUnusedLocals, noUncheckedIndexedAccess) stand in for one.
check:
	npx tsc --noEmit -p tsconfig.json
	node scripts/run-tests.mjs $$(node scripts/check-tests.mjs)

# Targets that need root: network namespaces, tc programs, cgroups, packages, $(PREFIX)/bin.
ROOT_TARGETS := setup demo test test-live bench install uninstall

ifneq ($(shell id -u),0)
SUDO := $(shell command -v sudo 2>/dev/null)
$(ROOT_TARGETS):
ifeq ($(SUDO),)
	@echo "doze: make $@ needs root (network namespaces, tc programs, cgroups, packages): run it as root" >&2; exit 2
else
	@echo "doze: make $@ needs root: re-running it under sudo" >&2
	@sudo $(MAKE) --no-print-directory $@ PREFIX=$(PREFIX)
endif
else
setup:
	@bash scripts/setup.sh test

test: build guest check-test-tools
	npx tsc --noEmit -p tsconfig.json
	node scripts/run-tests.mjs

test-live: build
	node scripts/run-tests.mjs test/live/

# Runs until Ctrl-C, which wakes the app and removes everything the demo created.
demo: build
	node dist/demo/demo.js

bench: build bench/doze-count-only.bpf.o bench/doze-no-talkers.bpf.o bench/doze-talkers-every-packet.bpf.o bench/doze-before-ipv6.bpf.o
	npx tsx bench/run.ts

# `doze` on PATH: a link to this checkout's build (it keeps using this checkout's node_modules).
install: build
	install -d $(PREFIX)/bin
	ln -sfn $(CURDIR)/dist/cli.js $(PREFIX)/bin/doze
	@echo "doze: installed $(PREFIX)/bin/doze -> $(CURDIR)/dist/cli.js ($$($(PREFIX)/bin/doze --version))"

uninstall:
	rm -f $(PREFIX)/bin/doze
endif

# README's Configuration table, generated from agent/config/schema.ts (a test fails while it is stale).
docs: build
	node scripts/update-config-reference.mjs

# What the build and the demo need; installs only that part of scripts/system-packages.txt.
check-tools:
	@command -v $(CLANG) >/dev/null && command -v bpftool >/dev/null && command -v tc >/dev/null && command -v $(CC) >/dev/null \
	  && [ -d node_modules ] && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null \
	  || bash scripts/setup.sh demo

# What only the tests add (Chromium for the status page, wrk, openssl).
check-test-tools:
	@{ command -v chromium && command -v wrk && command -v openssl && command -v dockerd; } >/dev/null 2>&1 || bash scripts/setup.sh test

agent/bpf/%.bpf.o: agent/bpf/%.bpf.c
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The agent's map reader/writer and wake-event reader (agent/sources/map-client.ts). Linked
# statically (libbpf, libelf, zlib, libc): a node running a release needs none of them installed.
agent/bpf/doze-maps: agent/bpf/doze-maps.c
	$(CC) -O2 -Wall -Werror $< -static -lbpf -lelf -lz -o $@

# The qemu runtime's page-out helper (agent/runtimes/qemu/memory-reclaim.ts).
QEMU_HELPER := agent/runtimes/qemu/doze-pageout agent/runtimes/qemu/doze-working-set
agent/runtimes/qemu/%: agent/runtimes/qemu/%.c
	$(CC) -O2 -Wall -Werror $< -static -o $@

# Counting-only variant, for bench/ to price the connection tracking.
bench/doze-count-only.bpf.o: agent/bpf/doze.bpf.c
	$(CLANG) $(BPF_CFLAGS) -DDOZE_COUNT_ONLY -c $< -o $@

# Without the top-talkers table, and with it updated on every packet, for bench/ to price the table and the choice to update it
# only on new connections and packets outside TCP tracking.
bench/doze-no-talkers.bpf.o: agent/bpf/doze.bpf.c
	$(CLANG) $(BPF_CFLAGS) -DDOZE_NO_TALKERS -c $< -o $@

bench/doze-talkers-every-packet.bpf.o: agent/bpf/doze.bpf.c
	$(CLANG) $(BPF_CFLAGS) -DDOZE_TALKERS_EVERY_PACKET -c $< -o $@

# The tc program before IPv6 (main at 91f1aa7: the state slots, no IPv6), for bench/ to price IPv6 against it in the same run.
# Outside a git checkout there is none, and the bench says it skipped that comparison.
BEFORE_IPV6 := 91f1aa7
bench/doze-before-ipv6.bpf.o:
	@if git show $(BEFORE_IPV6):agent/bpf/doze.bpf.c > bench/doze-before-ipv6.bpf.c 2>/dev/null; then \
	  $(CLANG) $(BPF_CFLAGS) -c bench/doze-before-ipv6.bpf.c -o $@; \
	else echo "doze: no git history here: the bench skips the comparison with the program before IPv6" >&2; fi
	@rm -f bench/doze-before-ipv6.bpf.c

# install(1) replaces files instead of writing into them: a running agent's helper is not "busy".
dist/.built: $(TS_SRC) tsconfig.json tsconfig.build.json package.json $(BPF_OBJ) agent/bpf/doze-maps $(QEMU_HELPER)
	npx tsc -p tsconfig.build.json
	install -D -m 644 -t dist/agent/bpf $(BPF_OBJ)
	install -D -m 755 -t dist/agent/bpf agent/bpf/doze-maps
	install -D -m 755 -t dist/agent/runtimes/qemu $(QEMU_HELPER)
	install -D -m 644 -t dist/demo demo/app.mjs
	chmod +x dist/cli.js
	touch $@

build: check-tools $(BPF_OBJ) agent/bpf/doze-maps $(QEMU_HELPER) dist/.built

# The live test guest (test/helpers/qemu-guest.ts, bench/): Debian's linux-image-cloud-amd64
# kernel + a busybox-static initramfs serving an in-memory counter over HTTP. Build output only.
GUEST_SRC := scripts/build-guest.sh scripts/guest/init scripts/guest/http-handler

check-guest-tools:
	@{ ls /boot/vmlinuz-*-cloud-amd64 && dpkg -s busybox-static && command -v cpio && command -v qemu-system-x86_64; } >/dev/null 2>&1 \
	  || bash scripts/setup.sh test

build/guest/.built: $(GUEST_SRC) $(wildcard /boot/vmlinuz-*-cloud-amd64)
	bash scripts/build-guest.sh build/guest
	touch $@

guest: check-guest-tools build/guest/.built

# The release: build/doze-<version>-linux-<arch>.tar.gz + .sha256 (scripts/dist.sh says what is in it).
dist: build
	bash scripts/dist.sh

# The OCI image from that tarball (Dockerfile; needs a Docker engine): build/doze-image-<version>.tar.
image: dist
	bash scripts/image.sh

clean:
	rm -rf build/stage build/image build/doze-* dist $(BPF_OBJ) agent/bpf/doze-maps bench/*.o artifacts build/guest $(QEMU_HELPER)
