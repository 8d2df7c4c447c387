# doze: build, test, demo, bench.  Run `make setup` once as root on a fresh machine
# (demo and test run it themselves when something is missing).
SHELL := /bin/bash
ARCH := $(shell uname -m)
CLANG ?= clang
# Pinned flags: BPF target, CO-RE-free, warnings are errors (cilium/ebpf style).
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -mcpu=v3 -I/usr/include/$(ARCH)-linux-gnu
BPF_SRC := $(wildcard agent/bpf/*.bpf.c)
BPF_OBJ := $(BPF_SRC:.c=.o)
TS_SRC := $(shell find cli.ts agent plugin demo -name '*.ts' 2>/dev/null)

.PHONY: all setup build test test-live demo bench clean check-tools

all: build

setup:
	@bash scripts/setup.sh

check-tools:
	@command -v $(CLANG) >/dev/null && command -v bpftool >/dev/null && command -v tc >/dev/null && [ -d node_modules ] \
	  || bash scripts/setup.sh

agent/bpf/%.bpf.o: agent/bpf/%.bpf.c
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The agent's map reader/writer and wake-event reader (agent/sources/map-client.ts).
agent/bpf/doze-maps: agent/bpf/doze-maps.c
	$(CC) -O2 -Wall -Werror $< -lbpf -o $@

# Counting-only variant, for bench/ to price the connection tracking.
bench/doze-count-only.bpf.o: agent/bpf/doze.bpf.c
	$(CLANG) $(BPF_CFLAGS) -DDOZE_COUNT_ONLY -c $< -o $@

dist/.built: $(TS_SRC) tsconfig.json tsconfig.build.json package.json $(BPF_OBJ) agent/bpf/doze-maps
	npx tsc -p tsconfig.build.json
	mkdir -p dist/agent/bpf && cp $(BPF_OBJ) agent/bpf/doze-maps dist/agent/bpf/ && cp demo/app.mjs dist/demo/
	chmod +x dist/cli.js
	touch $@

build: check-tools $(BPF_OBJ) agent/bpf/doze-maps dist/.built

test: build
	npx tsc --noEmit -p tsconfig.json
	node scripts/run-tests.mjs

test-live: build
	node scripts/run-tests.mjs test/live/

demo: build
	node dist/demo/demo.js

bench: build bench/doze-count-only.bpf.o
	npx tsx bench/run.ts

clean:
	rm -rf dist $(BPF_OBJ) agent/bpf/doze-maps bench/*.o artifacts
