// SPDX-License-Identifier: MPL-2.0
// doze-maps: the agent's window on its pinned BPF maps, as a long-lived
// co-process speaking lines (bpftool's JSON is too slow for 10k-entry dumps
// and cannot be flushed per command).
//
//   doze-maps serve          commands on stdin, one answer per command:
//     dump PATH              -> "ok N" then N lines "KEYHEX VALUEHEX"
//     lookup PATH KEYHEX     -> "ok 1" + one line, or "ok 0" when absent
//     lookupn PATH KEYHEX... -> "ok N" + a line per key found (one round trip
//                               for many keys: the detector's cost follows
//                               the instances it looks at, not the map size)
//     update PATH KEYHEX VALUEHEX -> "ok 0"
//     delete PATH KEYHEX     -> "ok 0" (absent is fine)
//     cas PATH KEYHEX EXPECTEDHEX NEWHEX
//                            -> "ok 1" + "KEYHEX PREVIOUSHEX": a compare-and-swap
//                               of a 4-byte value in place, on an mmap of an
//                               array map (BPF_F_MMAPABLE), atomic with the tc
//                               program's own; the swap happened iff PREVIOUS
//                               equals EXPECTED (doze_state, docs/state-handoff.md)
//     load OBJ PINDIR        -> "ok 0": opens and loads the tc programs of OBJ
//                               once (issue 29), its LIBBPF_PIN_BY_NAME maps
//                               pinned in (or reused from) PINDIR, the same
//                               pins `tc … bpf obj` makes; a pin of another
//                               layout answers "err load …: couldn't reuse
//                               pinned map at 'PATH' …". Loading again swaps
//                               the object (attached filters keep theirs).
//     attach IFNAME HOOK SECTION
//                            -> "ok 0": the loaded program of section
//                               tc/SECTION on IFNAME's clsact HOOK (egress or
//                               ingress), by fd over netlink: a classic
//                               direct-action filter at pref 100 handle 0xd0,
//                               as `tc filter replace … bpf da` made it, so tc
//                               lists it and a later attach replaces it
//     detach IFNAME          -> "ok 0": removes doze's filters (pref 100,
//                               handle 0xd0) from both hooks, and the clsact
//                               qdisc when no filter of anyone is left; a
//                               missing interface is fine (it left with its
//                               instance)
//     any failure            -> "err MESSAGE"; the process keeps serving
//   Every answer is complete or an error: a dump or lookup that fails part way
//   (a batch, an allocation) answers "err", never "ok" with the rows so far, so
//   a reader never takes part of a map for all of it. Command lines may be of
//   any length (getline): a line is one command, whatever its size.
//   Test knob: DOZE_MAPS_FAIL_DUMP=NAME:N makes the Nth batch of every dump of a
//   map whose path ends in NAME fail with EIO (tests of the error path only).
//   doze-maps events PATH    perf event array reader: "ready", then
//                            "sample HEX" / "lost N" lines; exits when orphaned.
//     Thaw at the event: commands on stdin arm an early thaw of a freezer
//     instance, done here the moment its wake event arrives, before the line
//     reaches the agent (which then runs the rest of the wake as before):
//       arm KEYHEX SINCE_NS FILE VALUE  on the first wake event for instance
//                            KEYHEX (the record's first 4 bytes) stamped at or
//                            after SINCE_NS, write VALUE to FILE (freezer.state
//                            THAWED, or cgroup.freeze 0); one-shot: that event
//                            ends the arm, thawed or not (no room)
//       disarm KEYHEX        no early thaw for it (it woke another way)
//       room N SEEN          at most N early thaws until the next room line
//                            (-1: no limit; 0 at start), less those made here
//                            since the agent had read SEEN of them (their lines
//                            still in the pipe): the node budget's room, so an
//                            instance that must wait for room is never thawed
//                            here, and a room is never granted twice
//     A wake sample that thawed early reads "sample HEX thawed NS" (NS: the
//     CLOCK_MONOTONIC time the write returned; the kernel thaws synchronously),
//     one whose write failed "sample HEX thaw-failed ERRNO" (the agent's own
//     thaw then finds and reports what is wrong).
//   doze-maps lock DIR       takes an exclusive flock(2) on DIR (the agent's
//                            pinned-maps directory) and holds it until stdin
//                            closes: "locked", or "busy" and exit 3 when
//                            another process holds it. The kernel releases
//                            the lock when this process dies, so a crashed
//                            agent never leaves a stale lock behind.
//
// Every mode dies with the agent (PR_SET_PDEATHSIG), so no helper outlives it.
//
// Build: cc -O2 -Wall -Werror doze-maps.c -lbpf -o doze-maps (see Makefile).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <time.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000 // linux/sched.h; glibc declares it only under _GNU_SOURCE
#endif

#define MAX_MAPS 32
#define MAX_KEYS 8192

struct opened {
	char path[4096];
	int fd;
	__u32 key_size, value_size, type, flags, max_entries;
	void *mem; // the array's values, mapped on the first cas (MAP_FAILED: not yet)
	size_t mem_len;
};

static struct opened maps[MAX_MAPS];
static int n_maps;

static struct opened *open_map(const char *path)
{
	for (int i = 0; i < n_maps; i++)
		if (strcmp(maps[i].path, path) == 0)
			return &maps[i];
	int fd = bpf_obj_get(path);
	if (fd < 0)
		return NULL;
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		close(fd);
		return NULL;
	}
	if (n_maps == MAX_MAPS) { // recycle the oldest slot
		if (maps[0].mem != MAP_FAILED)
			munmap(maps[0].mem, maps[0].mem_len);
		close(maps[0].fd);
		memmove(&maps[0], &maps[1], sizeof(maps[0]) * (MAX_MAPS - 1));
		n_maps--;
	}
	struct opened *m = &maps[n_maps++];
	snprintf(m->path, sizeof(m->path), "%s", path);
	m->fd = fd;
	m->key_size = info.key_size;
	m->value_size = info.value_size;
	m->type = info.type;
	m->flags = info.map_flags;
	m->max_entries = info.max_entries;
	m->mem = MAP_FAILED;
	m->mem_len = 0;
	return m;
}

// A pin may be removed and recreated (agent restart): drop a cached fd on error.
static void forget(struct opened *m)
{
	int i = m - maps;
	if (m->mem != MAP_FAILED)
		munmap(m->mem, m->mem_len);
	close(m->fd);
	memmove(&maps[i], &maps[i + 1], sizeof(maps[0]) * (n_maps - i - 1));
	n_maps--;
}

static void put_hex(const unsigned char *b, __u32 n)
{
	static const char digits[] = "0123456789abcdef";
	for (__u32 i = 0; i < n; i++) {
		putchar(digits[b[i] >> 4]);
		putchar(digits[b[i] & 15]);
	}
}

static int parse_hex(const char *s, unsigned char *out, __u32 n)
{
	if (!s || strlen(s) != n * 2)
		return -1;
	for (__u32 i = 0; i < n; i++) {
		unsigned int v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = v;
	}
	return 0;
}

static void fail(const char *what, const char *path)
{
	printf("err %s %s: %s\n", what, path ? path : "", strerror(errno ? errno : EINVAL));
}

// The answer to a dump or lookup: "ok N", then N lines of "KEYHEX VALUEHEX".
static void put_rows(struct opened *m, const unsigned char *rows, size_t n)
{
	size_t rec = m->key_size + m->value_size;
	printf("ok %zu\n", n);
	for (size_t i = 0; i < n; i++) {
		put_hex(rows + i * rec, m->key_size);
		putchar(' ');
		put_hex(rows + i * rec + m->key_size, m->value_size);
		putchar('\n');
	}
}

// Appends one row (key then value) to a growing buffer; false when memory ran out.
static bool add_row(unsigned char **all, size_t *cap, size_t *n, size_t rec, const void *key, size_t key_size, const void *value, size_t value_size)
{
	if (*n == *cap) {
		unsigned char *grown = realloc(*all, *cap * 2 * rec);
		if (!grown)
			return false;
		*all = grown;
		*cap *= 2;
	}
	memcpy(*all + *n * rec, key, key_size);
	memcpy(*all + *n * rec + key_size, value, value_size);
	(*n)++;
	return true;
}

// The test knob (header): which map's dumps fail, and at which batch (1-based).
static bool injected_failure(const struct opened *m, __u32 batch)
{
	const char *knob = getenv("DOZE_MAPS_FAIL_DUMP");
	const char *colon = knob ? strrchr(knob, ':') : NULL;
	if (!colon)
		return false;
	size_t name_len = colon - knob, path_len = strlen(m->path);
	if (name_len == 0 || name_len > path_len || strncmp(m->path + path_len - name_len, knob, name_len))
		return false;
	return (__u32)atoi(colon + 1) == batch;
}

enum dump_result { DUMP_DONE, DUMP_UNSUPPORTED, DUMP_FAILED };

// Batched lookups walk the hash map by bucket, so entries deleted during the dump (the tc
// program removes ended connections all the time) neither restart it nor repeat rows, as a
// get_next_key walk does when its cursor key is gone. DUMP_UNSUPPORTED when the kernel or the
// map type has no batch lookup (the caller walks key by key instead); DUMP_FAILED, with errno
// set, when a batch or an allocation failed part way: the rows read so far are not the map.
static enum dump_result dump_batched(struct opened *m, unsigned char **all, size_t *cap, size_t *n, size_t rec)
{
	__u32 chunk = 256, batch = 0;
	__u64 in_batch = 0, out_batch = 0;
	bool first = true;
	enum dump_result result = DUMP_DONE;
	unsigned char *keys = NULL, *values = NULL;
	for (;;) {
		unsigned char *k = realloc(keys, (size_t)chunk * m->key_size), *v = realloc(values, (size_t)chunk * m->value_size);
		if (k)
			keys = k;
		if (v)
			values = v;
		if (!k || !v) {
			errno = ENOMEM;
			result = DUMP_FAILED;
			break;
		}
		__u32 count = chunk;
		int err = bpf_map_lookup_batch(m->fd, first ? NULL : &in_batch, &out_batch, keys, values, &count, NULL);
		if (injected_failure(m, ++batch)) {
			err = -1;
			errno = EIO;
		}
		if (err && errno == ENOSPC && count == 0) {
			chunk *= 2; // one bucket holds more than a chunk: retry the same batch with room for it
			continue;
		}
		if (err && errno != ENOENT) {
			// No batch lookup for this map type or kernel (an LPM trie answers ENOTSUPP, 524).
			result = first && (errno == EINVAL || errno == ENOTSUP || errno == 524) ? DUMP_UNSUPPORTED : DUMP_FAILED;
			break;
		}
		for (__u32 i = 0; i < count; i++) {
			if (!add_row(all, cap, n, rec, keys + (size_t)i * m->key_size, m->key_size, values + (size_t)i * m->value_size, m->value_size)) {
				errno = ENOMEM;
				result = DUMP_FAILED;
				break;
			}
		}
		if (err || result == DUMP_FAILED) // ENOENT: that was the last batch
			break;
		in_batch = out_batch;
		first = false;
	}
	int saved = errno;
	free(keys);
	free(values);
	errno = saved;
	return result;
}

static void do_dump(struct opened *m)
{
	unsigned char key[512], next[512], value[4096];
	if (m->key_size > sizeof(key) || m->value_size > sizeof(value)) {
		errno = E2BIG;
		fail("dump", m->path);
		return;
	}
	// Collect first so the count line can lead.
	size_t cap = 1024, n = 0, rec = m->key_size + m->value_size;
	unsigned char *all = malloc(cap * rec);
	if (!all) {
		errno = ENOMEM;
		fail("dump", m->path);
		return;
	}
	enum dump_result result = dump_batched(m, &all, &cap, &n, rec);
	if (result == DUMP_UNSUPPORTED) {
		result = DUMP_DONE;
		void *prev = NULL;
		int err;
		while ((err = bpf_map_get_next_key(m->fd, prev, next)) == 0) {
			memcpy(key, next, m->key_size);
			prev = key;
			if (bpf_map_lookup_elem(m->fd, key, value)) {
				if (errno == ENOENT)
					continue; // deleted meanwhile
				result = DUMP_FAILED;
				break;
			}
			if (!add_row(&all, &cap, &n, rec, key, m->key_size, value, m->value_size)) {
				errno = ENOMEM;
				result = DUMP_FAILED;
				break;
			}
		}
		if (err && errno != ENOENT)
			result = DUMP_FAILED;
	}
	if (result == DUMP_FAILED) {
		fail("dump", m->path);
		forget(m); // a failed read may be a pin recreated under us: open it again next time
	} else {
		put_rows(m, all, n);
	}
	free(all);
}

// Keys arrive as the rest of the line (the first two already split off by strtok).
// Values are kept from the one lookup, so the count line always matches the rows. An absent
// key is no row; a malformed key, too many keys or a failed lookup is an error, not a
// shorter answer.
static void lookup_many(struct opened *m, char *first, char *second)
{
	static char *keys[MAX_KEYS];
	int n_keys = 0, n_found = 0;
	if (first)
		keys[n_keys++] = first;
	if (second)
		keys[n_keys++] = second;
	char *k;
	while ((k = strtok(NULL, " "))) {
		if (n_keys == MAX_KEYS) {
			errno = E2BIG;
			fail("lookupn (at most 8192 keys)", m->path);
			return;
		}
		keys[n_keys++] = k;
	}
	size_t rec = m->key_size + m->value_size;
	unsigned char *rows = malloc((n_keys ? n_keys : 1) * rec);
	if (!rows) {
		errno = ENOMEM;
		fail("lookupn", m->path);
		return;
	}
	for (int i = 0; i < n_keys; i++) {
		unsigned char *row = rows + n_found * rec;
		if (parse_hex(keys[i], row, m->key_size)) {
			errno = EINVAL;
			fail("lookupn key", m->path);
			free(rows);
			return;
		}
		if (!bpf_map_lookup_elem(m->fd, row, row + m->key_size))
			n_found++;
		else if (errno != ENOENT) {
			fail("lookupn", m->path);
			free(rows);
			forget(m);
			return;
		}
	}
	put_rows(m, rows, (size_t)n_found);
	free(rows);
}

// Compare-and-swap of a 4-byte value in an mmapable array, on the map's own memory: the
// syscall update copies a whole value over whatever is there, so it could erase a state the
// tc program swapped in a moment earlier. Same instruction (lock cmpxchg) as the program's.
static void compare_and_swap(struct opened *m, const char *khex, const char *ehex, const char *nhex)
{
	__u32 index, expected, desired;
	if (m->type != BPF_MAP_TYPE_ARRAY || !(m->flags & BPF_F_MMAPABLE) || m->key_size != 4 || m->value_size != 4) {
		errno = EINVAL;
		fail("cas (needs an mmapable array of 4-byte values)", m->path);
		return;
	}
	if (parse_hex(khex, (unsigned char *)&index, 4) || parse_hex(ehex, (unsigned char *)&expected, 4) ||
	    parse_hex(nhex, (unsigned char *)&desired, 4) || index >= m->max_entries) {
		errno = EINVAL;
		fail("cas", m->path);
		return;
	}
	if (m->mem == MAP_FAILED) {
		// Array values are laid out 8 bytes apart (round_up(value_size, 8)) from offset 0.
		long page = sysconf(_SC_PAGESIZE);
		m->mem_len = ((size_t)m->max_entries * 8 + page - 1) / page * page;
		m->mem = mmap(NULL, m->mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
		if (m->mem == MAP_FAILED) {
			fail("cas mmap", m->path);
			return;
		}
	}
	__u32 *value = (__u32 *)((char *)m->mem + (size_t)index * 8);
	__u32 previous = expected;
	__atomic_compare_exchange_n(value, &previous, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	printf("ok 1\n");
	put_hex((unsigned char *)&index, 4);
	putchar(' ');
	put_hex((unsigned char *)&previous, 4);
	putchar('\n');
}

// ---- The tc programs (issue 29): loaded once, attached to each interface by fd. ----
//
// Why here and not `tc filter replace … bpf obj` per interface: that was two process spawns
// and two verifier passes per instance interface (1,000 instances: 1,000 times that), while a
// program loaded once can be attached any number of times. Classic clsact filters (not tcx)
// at tc's pref and handle, so `tc filter show`, the agent's isAttached/listFilters, a
// hand-over (filters left attached across an agent restart) and other tools' filters behave
// as before. The filters hold their own references to the programs: they stay attached when
// this process exits or loads again.
#define DOZE_TC_PREF 100
#define DOZE_TC_HANDLE 0xd0

static struct bpf_object *loaded;
// libbpf's first warning while loading (a pin it could not reuse wins): its errors say which
// map or program, where errno alone would not.
static char load_warning[512];

static int capture_warning(enum libbpf_print_level level, const char *format, va_list args)
{
	char line[sizeof(load_warning)];
	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), format, args);
	line[strcspn(line, "\n")] = 0;
	if (!load_warning[0] || (strstr(line, "couldn't reuse pinned map") && !strstr(load_warning, "couldn't reuse pinned map")))
		snprintf(load_warning, sizeof(load_warning), "%s", line);
	return 0;
}

static void do_load(const char *object_path, const char *pin_dir)
{
	if (!pin_dir) {
		errno = EINVAL;
		fail("load (usage: load OBJ PINDIR)", object_path);
		return;
	}
	load_warning[0] = 0;
	libbpf_set_print(capture_warning);
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir);
	struct bpf_object *object = bpf_object__open_file(object_path, &opts);
	int err = object ? 0 : -errno;
	struct bpf_program *program;
	if (!err) {
		// libbpf knows "tc" and "classifier" sections, not tc's "tc/NAME" ones.
		bpf_object__for_each_program(program, object)
			bpf_program__set_type(program, BPF_PROG_TYPE_SCHED_CLS);
		err = bpf_object__load(object);
	}
	libbpf_set_print(NULL);
	if (err) {
		if (object)
			bpf_object__close(object);
		printf("err load %s: %s (%s)\n", object_path, load_warning[0] ? load_warning : "libbpf gave no reason", strerror(-err));
		return;
	}
	if (loaded)
		bpf_object__close(loaded);
	loaded = object;
	printf("ok 0\n");
}

static bool hook_point(const char *hook, enum bpf_tc_attach_point *point)
{
	if (hook && strcmp(hook, "egress") == 0)
		*point = BPF_TC_EGRESS;
	else if (hook && strcmp(hook, "ingress") == 0)
		*point = BPF_TC_INGRESS;
	else
		return false;
	return true;
}

static void do_attach(const char *ifname, const char *hook, const char *section)
{
	enum bpf_tc_attach_point point;
	char wanted[128];
	if (!hook_point(hook, &point) || !section) {
		printf("err attach (usage: attach IFNAME egress|ingress SECTION)\n");
		return;
	}
	if (!loaded) {
		printf("err attach %s: no programs loaded (load OBJ PINDIR first)\n", ifname);
		return;
	}
	snprintf(wanted, sizeof(wanted), "tc/%s", section);
	struct bpf_program *program = NULL, *p;
	bpf_object__for_each_program(p, loaded)
		if (strcmp(bpf_program__section_name(p), wanted) == 0)
			program = p;
	if (!program) {
		printf("err attach %s: the loaded object has no section %s\n", ifname, wanted);
		return;
	}
	unsigned int ifindex = if_nametoindex(ifname);
	if (!ifindex) {
		printf("err attach %s: no such interface\n", ifname);
		return;
	}
	LIBBPF_OPTS(bpf_tc_hook, tc_hook, .ifindex = ifindex, .attach_point = point);
	int err = bpf_tc_hook_create(&tc_hook); // the clsact qdisc, shared by both hooks
	if (err && err != -EEXIST) {
		printf("err attach %s: cannot add a clsact qdisc: %s\n", ifname, strerror(-err));
		return;
	}
	// REPLACE: a filter a previous agent left (hand-over, crash) is swapped for this object's.
	LIBBPF_OPTS(bpf_tc_opts, tc_opts, .handle = DOZE_TC_HANDLE, .priority = DOZE_TC_PREF,
		    .prog_fd = bpf_program__fd(program), .flags = BPF_TC_F_REPLACE);
	err = bpf_tc_attach(&tc_hook, &tc_opts);
	if (err) {
		printf("err attach %s %s %s: %s\n", ifname, hook, section, strerror(-err));
		return;
	}
	printf("ok 0\n");
}

// How many filters (anyone's) a clsact hook holds, by a netlink dump; -1 when it cannot tell.
static int count_filters(unsigned int ifindex, __u32 parent)
{
	int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (sock < 0)
		return -1;
	struct {
		struct nlmsghdr header;
		struct tcmsg tc;
	} request = {
		.header = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg)), .nlmsg_type = RTM_GETTFILTER,
			    .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
		.tc = { .tcm_family = AF_UNSPEC, .tcm_ifindex = ifindex, .tcm_parent = parent },
	};
	int count = 0;
	if (send(sock, &request, request.header.nlmsg_len, 0) < 0)
		count = -1;
	static char buffer[32768];
	for (bool done = count < 0; !done;) {
		ssize_t len = recv(sock, buffer, sizeof(buffer), 0);
		if (len <= 0) {
			count = -1;
			break;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			if (h->nlmsg_type == NLMSG_ERROR) {
				count = -1;
				done = true;
				break;
			}
			if (h->nlmsg_type == RTM_NEWTFILTER)
				count++;
		}
	}
	close(sock);
	return count;
}

static void do_detach(const char *ifname)
{
	unsigned int ifindex = if_nametoindex(ifname);
	if (!ifindex) {
		printf("ok 0\n"); // gone with its instance, and its filters with it
		return;
	}
	const enum bpf_tc_attach_point points[] = { BPF_TC_EGRESS, BPF_TC_INGRESS };
	for (int i = 0; i < 2; i++) {
		LIBBPF_OPTS(bpf_tc_hook, tc_hook, .ifindex = ifindex, .attach_point = points[i]);
		LIBBPF_OPTS(bpf_tc_opts, tc_opts, .handle = DOZE_TC_HANDLE, .priority = DOZE_TC_PREF);
		int err = bpf_tc_detach(&tc_hook, &tc_opts);
		// ENOENT: not there; EINVAL: no clsact qdisc at all; ENODEV: the interface left meanwhile.
		if (err && err != -ENOENT && err != -EINVAL && err != -ENODEV) {
			printf("err detach %s %s: %s\n", ifname, i ? "ingress" : "egress", strerror(-err));
			return;
		}
	}
	// The qdisc goes only when nobody's filters are left on it (another tool's stay, with it).
	if (count_filters(ifindex, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)) == 0 &&
	    count_filters(ifindex, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)) == 0) {
		LIBBPF_OPTS(bpf_tc_hook, tc_hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
		bpf_tc_hook_destroy(&tc_hook); // fails harmlessly when there is no clsact qdisc
	}
	printf("ok 0\n");
}

static int serve(void)
{
	// getline grows the buffer to the longest line: a command is one line whatever its length
	// (a fixed 64 KiB buffer cut longer ones in two, and the second half drew a second answer,
	// so every later answer went to the wrong request).
	char *line = NULL;
	size_t line_cap = 0;
	unsigned char key[512], value[4096];
	while (getline(&line, &line_cap, stdin) > 0) {
		line[strcspn(line, "\n")] = 0;
		char *cmd = strtok(line, " ");
		char *path = strtok(NULL, " ");
		char *khex = strtok(NULL, " ");
		char *vhex = strtok(NULL, " ");
		if (cmd && path && strcmp(cmd, "load") == 0) {
			do_load(path, khex);
			goto next;
		}
		if (cmd && path && strcmp(cmd, "attach") == 0) {
			do_attach(path, khex, vhex);
			goto next;
		}
		if (cmd && path && strcmp(cmd, "detach") == 0) {
			do_detach(path);
			goto next;
		}
		if (cmd && path && strcmp(cmd, "lookupn") == 0) {
			struct opened *m = open_map(path);
			if (!m) {
				fail("open", path);
				goto next;
			}
			lookup_many(m, khex, vhex);
			goto next;
		}
		errno = 0;
		if (!cmd || !path) {
			fail("usage", NULL);
			goto next;
		}
		struct opened *m = open_map(path);
		if (!m) {
			fail("open", path);
			goto next;
		}
		if (strcmp(cmd, "dump") == 0) {
			do_dump(m);
		} else if (strcmp(cmd, "cas") == 0) {
			compare_and_swap(m, khex, vhex, strtok(NULL, " "));
		} else if (parse_hex(khex, key, m->key_size)) {
			errno = EINVAL;
			fail("key", path);
		} else if (strcmp(cmd, "lookup") == 0) {
			if (bpf_map_lookup_elem(m->fd, key, value) == 0) {
				printf("ok 1\n");
				put_hex(key, m->key_size);
				putchar(' ');
				put_hex(value, m->value_size);
				putchar('\n');
			} else if (errno == ENOENT) {
				printf("ok 0\n");
			} else {
				fail("lookup", path);
				forget(m);
			}
		} else if (strcmp(cmd, "update") == 0) {
			if (parse_hex(vhex, value, m->value_size)) {
				errno = EINVAL;
				fail("value", path);
			} else if (bpf_map_update_elem(m->fd, key, value, BPF_ANY) == 0) {
				printf("ok 0\n");
			} else {
				fail("update", path);
				forget(m);
			}
		} else if (strcmp(cmd, "delete") == 0) {
			if (bpf_map_delete_elem(m->fd, key) == 0 || errno == ENOENT)
				printf("ok 0\n");
			else
				fail("delete", path);
		} else {
			fail("unknown command", cmd);
		}
	next:
		fflush(stdout);
	}
	free(line);
	return 0;
}

// Early thaws armed by the agent (events mode). Linear scan: a few thousand sleepers at most,
// and one scan per wake event, not per packet.
struct armed_thaw {
	__u32 key;      // the wake record's instance_addr, as its bytes
	__u64 since_ns; // events stamped earlier belong to an earlier sleep
	char *file;
	char *value;
};

static struct armed_thaw *armed;
static size_t n_armed, armed_cap;
static long long thaw_room; // early thaws left before the agent says again; -1: no limit
static unsigned long long thaws_made; // early thaws made here (the agent's room line says how many it has read)

static void disarm_at(size_t i)
{
	free(armed[i].file);
	free(armed[i].value);
	armed[i] = armed[--n_armed];
}

static void disarm(__u32 key)
{
	for (size_t i = 0; i < n_armed; i++)
		if (armed[i].key == key)
			return disarm_at(i);
}

static void arm(__u32 key, __u64 since_ns, const char *file, const char *value)
{
	disarm(key);
	if (n_armed == armed_cap) {
		size_t cap = armed_cap ? armed_cap * 2 : 64;
		struct armed_thaw *grown = realloc(armed, cap * sizeof(*armed));
		if (!grown)
			return; // no early thaw: the agent's own wake still comes
		armed = grown;
		armed_cap = cap;
	}
	char *f = strdup(file), *v = strdup(value);
	if (!f || !v) {
		free(f);
		free(v);
		return;
	}
	armed[n_armed++] = (struct armed_thaw){ .key = key, .since_ns = since_ns, .file = f, .value = v };
}

// One command line from the agent (events mode); a malformed one is ignored: the agent's own
// wake path does not depend on it.
static void thaw_command(char *line)
{
	char *cmd = strtok(line, " ");
	char *khex = strtok(NULL, " ");
	__u32 key;
	if (!cmd)
		return;
	if (strcmp(cmd, "room") == 0 && khex) {
		char *seen = strtok(NULL, " ");
		long long room = strtoll(khex, NULL, 10);
		unsigned long long unseen = seen ? thaws_made - strtoull(seen, NULL, 10) : 0;
		thaw_room = room < 0 ? -1 : room > (long long)unseen ? room - (long long)unseen : 0;
	} else if (strcmp(cmd, "disarm") == 0 && !parse_hex(khex, (unsigned char *)&key, 4)) {
		disarm(key);
	} else if (strcmp(cmd, "arm") == 0 && !parse_hex(khex, (unsigned char *)&key, 4)) {
		char *since = strtok(NULL, " "), *file = strtok(NULL, " "), *value = strtok(NULL, " ");
		if (since && file && value)
			arm(key, strtoull(since, NULL, 10), file, value);
	}
}

static __u64 monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

// A wake record (wake_ns 0) for an armed instance, within the room: thaw it now. Returns the
// time the write returned, 0 when nothing was armed, or -errno when the write failed.
static long long thaw_early(const void *data, __u32 size)
{
	if (size < 24 || n_armed == 0)
		return 0;
	__u32 key;
	__u64 ts_ns, wake_ns;
	memcpy(&key, data, 4);
	memcpy(&ts_ns, (const char *)data + 8, 8);
	memcpy(&wake_ns, (const char *)data + 16, 8);
	if (wake_ns != 0)
		return 0; // a first-response record
	for (size_t i = 0; i < n_armed; i++) {
		if (armed[i].key != key)
			continue;
		if (ts_ns < armed[i].since_ns)
			return 0; // a late event of an earlier sleep
		// This sleep's one event: its arm ends here, thawed or not (no room: the agent makes it).
		long long result = 0;
		if (thaw_room != 0) {
			int fd = open(armed[i].file, O_WRONLY | O_CLOEXEC);
			if (fd < 0) {
				result = -(long long)errno;
			} else {
				size_t len = strlen(armed[i].value);
				errno = EIO; // a short write sets none
				result = write(fd, armed[i].value, len) == (ssize_t)len ? (long long)monotonic_ns() : -(long long)errno;
				close(fd);
			}
			if (result > 0) {
				thaws_made++;
				if (thaw_room > 0)
					thaw_room--;
			}
		}
		disarm_at(i);
		return result;
	}
	return 0;
}

static void on_sample(void *ctx, int cpu, void *data, __u32 size)
{
	(void)ctx;
	(void)cpu;
	long long thawed = thaw_early(data, size);
	fputs("sample ", stdout);
	put_hex(data, size);
	if (thawed > 0)
		printf(" thawed %lld", thawed);
	else if (thawed < 0)
		printf(" thaw-failed %lld", -thawed);
	putchar('\n');
	fflush(stdout);
}

static void on_lost(void *ctx, int cpu, __u64 count)
{
	(void)ctx;
	(void)cpu;
	printf("lost %llu\n", (unsigned long long)count);
	fflush(stdout);
}

// Reads what stdin has and runs each complete line; false once stdin is closed.
static bool read_commands(char *buf, size_t cap, size_t *len)
{
	static bool skipping; // inside a line too long for the buffer: dropped up to its end
	ssize_t got = read(0, buf + *len, cap - 1 - *len);
	if (got <= 0)
		return got < 0 && (errno == EINTR || errno == EAGAIN);
	*len += got;
	buf[*len] = 0;
	char *start = buf, *nl;
	while ((nl = strchr(start, '\n'))) {
		*nl = 0;
		if (!skipping)
			thaw_command(start);
		skipping = false;
		start = nl + 1;
	}
	*len -= start - buf;
	memmove(buf, start, *len);
	if (*len == cap - 1) {
		// A line longer than any command: drop it, and the rest of it as it comes.
		*len = 0;
		skipping = true;
	}
	return true;
}

static int events(const char *path)
{
	// The lowest real-time priority: a wake event's thaw then waits for no ordinary task on a busy
	// node (measured: p99 from the packet to the thaw 2.0 ms at normal priority, 0.52 ms here). The
	// reader only blocks in poll and does a few syscalls per event, one event per sleep, so it takes
	// nothing from anyone. Without the privilege (CAP_SYS_NICE) it stays at normal priority.
	struct sched_param rt = { .sched_priority = 1 };
	sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &rt);
	int fd = bpf_obj_get(path);
	if (fd < 0) {
		fail("open", path);
		return 1;
	}
	struct perf_buffer *pb = perf_buffer__new(fd, 8, on_sample, on_lost, NULL, NULL);
	if (!pb) {
		fail("perf_buffer", path);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	pid_t parent = getppid();
	// One poll over the perf buffers' epoll fd and stdin (the agent's thaw commands).
	struct pollfd fds[2] = { { .fd = perf_buffer__epoll_fd(pb), .events = POLLIN }, { .fd = 0, .events = POLLIN } };
	static char commands[8192];
	size_t commands_len = 0;
	for (;;) {
		int ready = poll(fds, 2, 250);
		if (ready < 0 && errno != EINTR) {
			fail("poll", path);
			break;
		}
		if (ready > 0 && (fds[1].revents & (POLLIN | POLLHUP)) && !read_commands(commands, sizeof(commands), &commands_len))
			fds[1].fd = -1; // stdin closed (or never given): no more commands, events still flow
		if (ready > 0 && fds[0].revents) {
			int err = perf_buffer__consume(pb);
			if (err < 0 && err != -EINTR) {
				errno = -err;
				fail("consume", path);
				break;
			}
		}
		if (getppid() != parent)
			return 0; // the agent is gone: exit without perf_buffer__free (below)
	}
	// perf_buffer__free deletes the map's per-CPU entries, whoever set them last: after a
	// crash, a new agent that started within this loop's 250 ms would lose its wake events.
	// Exiting without it leaves that to the kernel, which on close drops only the entries
	// set through this process's own map fd (perf_event_fd_array_release, kernel/bpf/arraymap.c).
	perf_buffer__free(pb);
	return 0;
}

static int lock_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fail("open", dir);
		return 1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		if (errno == EWOULDBLOCK) {
			printf("busy\n");
			fflush(stdout);
			return 3;
		}
		fail("flock", dir);
		return 1;
	}
	printf("locked\n");
	fflush(stdout);
	// Held until the agent closes our stdin (clean release) or dies (EOF, or the death signal).
	char buf[256];
	while (read(0, buf, sizeof(buf)) > 0)
		;
	return 0;
}

int main(int argc, char **argv)
{
	// Die with the agent, even if it is SIGKILLed; if it died before this line, the
	// modes notice on their own (stdin EOF, or a changed parent).
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_DFL);
	// The agent owns this process's lifetime (stdin EOF, SIGTERM, or the agent
	// dying): a Ctrl-C meant for the agent must not take the helper first.
	signal(SIGINT, SIG_IGN);
	libbpf_set_print(NULL);
	if (argc == 2 && strcmp(argv[1], "serve") == 0)
		return serve();
	if (argc == 3 && strcmp(argv[1], "events") == 0)
		return events(argv[2]);
	if (argc == 3 && strcmp(argv[1], "lock") == 0)
		return lock_dir(argv[2]);
	fprintf(stderr, "usage: doze-maps serve | doze-maps events PINNED_PERF_ARRAY | doze-maps lock DIR\n");
	return 2;
}
