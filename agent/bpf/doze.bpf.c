// SPDX-License-Identifier: GPL-2.0
// doze's tc programs: per-instance traffic counters, per-connection request
// tracking and wake events. Attached to an instance's host-side interface:
// egress = packets into the instance, ingress = packets out of it.
// Every path returns TC_ACT_UNSPEC: doze observes, it never decides a packet's
// fate, and filters after it on the same hook still run.
//
// Build: clang -O2 -g -Wall -Werror -target bpf -mcpu=v3 \
//          -I/usr/include/$(uname -m)-linux-gnu -c doze.bpf.c -o doze.bpf.o
// (the Makefile carries this line; the agent loads the object with tc).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Instance states in doze_state. The agent moves AWAKE to PAUSING and PAUSING
// to SLEEPING by compare-and-swap, in place, and writes AWAKE once the instance
// is awake; the program only ever moves SLEEPING or PAUSING to SIGNALLED, once
// per sleep, and tells the agent (docs/state-handoff.md: every interleaving).
#define DOZE_AWAKE 0
#define DOZE_SLEEPING 1
#define DOZE_SIGNALLED 2
#define DOZE_PAUSING 3

// Connection flags.
#define CONN_CHECK (1 << 0)      // a health-check connection: never counts
#define CONN_FIN_CLIENT (1 << 1)
#define CONN_FIN_SERVER (1 << 2)
// (1 << 3) was CONN_RST: a reset connection's entry is deleted now
#define CONN_PROBED (1 << 4)     // the instance's probe awaits the client's reply
#define CONN_CLIENT_WINDOW_CLOSED (1 << 5) // the client's last segment advertised window 0: a response waits on it

struct doze_counters {
	__u64 packets;      // unmarked packets into the instance
	__u64 last_seen_ns; // bpf_ktime of the last one (CLOCK_MONOTONIC)
	__u64 checks;       // marked (health-check) packets, skipped
	__u64 out_packets;  // packets out of the instance
	__u64 wake_ns;      // the packet that signalled the last wake (0: none yet)
	__u64 reply_ns;     // the instance's first payload to a client after it (0: not yet)
};

// Oriented client -> instance, whichever direction the packet went. 24 bytes,
// no padding (a hash key is hashed and compared whole). The instance is named
// by its key (below), whatever family reached it; the client by its address as
// IPv6, an IPv4 one IPv4-mapped (::ffff:a.b.c.d), which carries the family: an
// IPv6 packet from a mapped source is counted but never tracked (parse_ipv6),
// so the two families never meet in one record. A family byte would make the
// key 28 bytes, and the hash over it cost 4 ns more a packet (bench/tc-cost.ts).
struct doze_conn_key {
	__u32 client_addr[4];
	__u32 instance_key;
	__u16 client_port;
	__u16 instance_port;
};

struct doze_conn {
	__u64 last_ns;           // any packet, either direction
	__u64 client_payload_ns; // last payload from the client
	__u64 server_payload_ns; // last payload from the instance
	__u32 flags;
	__u32 client_next_seq;   // the next sequence number the instance expects from the client
	__u32 server_next_seq;   // the next sequence number the client expects from the instance
	// The last window each side advertised, raw (unscaled: only zero matters). The record stays
	// 40 bytes, so pins of the program before them are still the same size.
	__u16 client_window;
	__u16 server_window;
};

// Two kinds on one perf buffer: a wake (wake_ns 0: ts_ns is the packet that
// reached the sleeper) and the first response after a wake (ts_ns is the
// instance's first payload byte to a client, wake_ns the wake it answers).
// A wake also names its packet (src_* zero on a first-response record): why it woke.
// Its size and offsets are asserted below, and mirrored by WAKE_EVENT_BYTES and WAKE_EVENT_LAYOUT
// in agent/sources/bpf-records.ts (test/sources/wake-event-record.test.ts holds the two together).
struct doze_wake_event {
	__u32 instance_addr;
	__u32 ifindex;
	__u64 ts_ns;
	__u64 wake_ns;
	__u32 src_addr[4]; // IPv6; an IPv4 source IPv4-mapped (::ffff:a.b.c.d), as in doze_conn_key
	__u16 src_port;    // network order; TCP and UDP only, else 0
	__u8 src_family;   // 4 or 6; 0 when the packet was not IP (or on a first-response record)
	__u8 protocol;     // IP protocol (6 TCP, 17 UDP, 58 ICMPv6 …); IPv6: the first next header
	__u8 tcp_flags;    // WAKE_TCP_* below
	__u8 has_payload;  // a TCP packet carrying data (1), or not (0)
	__u8 pad[2];
};
_Static_assert(sizeof(struct doze_wake_event) == 48, "doze_wake_event: keep WAKE_EVENT_BYTES in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, instance_addr) == 0, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, ifindex) == 4, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, ts_ns) == 8, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, wake_ns) == 16, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, src_addr) == 24, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, src_port) == 40, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, src_family) == 42, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, protocol) == 43, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, tcp_flags) == 44, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_wake_event, has_payload) == 45, "doze_wake_event: keep WAKE_EVENT_LAYOUT in bpf-records.ts in step");

// Top talkers: per instance, the last few clients that opened a connection to it or sent it a
// packet outside a tracked connection (UDP, ICMP, an untracked TCP packet), so that traffic over
// connections already closed (a scraper connecting every 200 ms) still names who sent it. Open
// connections are in doze_conns already. A client matches its slot by address; a new one takes
// the least recent slot (an empty one first), so the table stays TALKER_SLOTS long whatever the
// number of clients, and a steady talker keeps its slot against one-off visitors. Mirrored by
// TALKER_SLOTS, TALKER_BYTES and TALKER_LAYOUT in agent/sources/bpf-records.ts
// (test/sources/talkers-record.test.ts holds the two together).
#define TALKER_SLOTS 8
struct doze_talker {
	__u64 addr[2];     // IPv6, as two words (compared whole); an IPv4 client IPv4-mapped, as in doze_conn_key (zero: an empty slot)
	__u64 first_ns;    // when this client took the slot
	__u64 last_ns;     // its last new connection or packet
	__u32 connections; // client SYNs that opened a tracked connection (a retransmitted SYN is not a new one)
	__u32 packets;     // packets outside TCP connection tracking
	__u16 port;        // the last source port (network order; TCP and UDP, else 0)
	__u8 protocol;     // the last one's IP protocol (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6 …)
	__u8 pad[5];
};
struct doze_talkers {
	struct doze_talker slot[TALKER_SLOTS];
};
_Static_assert(TALKER_SLOTS == 8, "doze_talkers: keep TALKER_SLOTS in bpf-records.ts in step");
_Static_assert(sizeof(struct doze_talker) == 48, "doze_talker: keep TALKER_BYTES in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, addr) == 0, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, first_ns) == 16, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, last_ns) == 24, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, connections) == 32, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, packets) == 36, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, port) == 40, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");
_Static_assert(__builtin_offsetof(struct doze_talker, protocol) == 42, "doze_talker: keep TALKER_LAYOUT in bpf-records.ts in step");

#define WAKE_TCP_FIN 1
#define WAKE_TCP_SYN 2
#define WAKE_TCP_RST 4
#define WAKE_TCP_ACK 16

struct doze_settings {
	__u32 check_mark; // skb->mark bits that identify health-check traffic
	__u32 pad;
};

// Instance keys. Every per-instance map (doze_state, doze_counters, the wake
// events) keys an instance by one 32-bit value: its IPv4 address (network
// order), 0.0.hi.lo for a host-port instance (port_key), or, for an instance
// with no IPv4 address, a key the agent derives from its IPv6 address (in
// 0.1.0.0-0.255.255.255, which no instance has). Its IPv6 addresses map to
// that key through doze_addr6, and its own interface through doze_ifaces, so
// every family's packets land on the same counters.

// iproute2's loader honours the legacy pinning field; libbpf-style .maps
// with LIBBPF_PIN_BY_NAME work with iproute2 built on libbpf (Debian's is).
// An instance's state lives in a slot of an array that neither side ever
// reallocates: a hash map update swaps in a new element, and a program run
// holding the old one would compare-and-swap on memory nobody reads again.
// doze_slots maps an instance key (IPv4 address, network byte order; a host
// port as port_key) to its slot; the agent assigns slots, and changes a state
// in place through the array's mmap (doze-maps cas). The array was a hash map
// keyed by address: a pin of that layout is refused (E_STALE_PINS).
#define DOZE_SLOTS 16384

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DOZE_SLOTS);
	__type(key, __u32);
	__type(value, __u32); // index into doze_state
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DOZE_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32); // DOZE_AWAKE …
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct doze_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct doze_conn_key);
	__type(value, struct doze_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_wake_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct doze_settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_settings SEC(".maps");

// An instance's key -> its top talkers. The agent makes an instance's entry when it tracks it and
// removes it when it untracks it; the program only writes into an entry that is there. Not
// preallocated: it holds what the agent tracks, not 16384 × 384 bytes.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct doze_talkers);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_talkers SEC(".maps");

// An IPv6 address -> its instance's key.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct in6_addr);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_addr6 SEC(".maps");

// An instance's own interface (ifindex) -> its key: frames of another
// ethertype into it are its (into_whom says why IP packets are not).
// Absent for an interface several instances share.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_ifaces SEC(".maps");

// Program-wide counters the agent reads as metrics (index: DOZE_STAT_*).
#define DOZE_STAT_EVENTS_LOST 0 // bpf_perf_event_output failed: a wake or first-response event never reached the agent
#define DOZE_STAT_COUNT 4
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DOZE_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_stats SEC(".maps");

static __always_inline void stat_add(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&doze_stats, &index);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void emit_event(struct __sk_buff *skb, struct doze_wake_event *ev)
{
	if (bpf_perf_event_output(skb, &doze_wake_events, BPF_F_CURRENT_CPU, ev, sizeof(*ev)))
		stat_add(DOZE_STAT_EVENTS_LOST);
}

// What parse() found.
#define PARSE_SKIP -1 // nobody's traffic: too short, ARP, IPv6 neighbour discovery
#define PARSE_IP 0    // IPv4 or IPv6 (family says which)
#define PARSE_OTHER 1 // another ethertype: belongs to the interface's instance

// IPv4 addresses sit in word 3 of src and dst, after the IPv4-mapped prefix.
#define V4 3

struct parsed {
	// IPv6 addresses; an IPv4 one IPv4-mapped (::ffff:a.b.c.d, RFC 4291 2.5.5.2).
	__u32 src[4], dst[4];
	__u8 family; // 4 or 6
	__u16 sport, dport;
	__u8 is_tcp;
	__u8 syn, ack, fin, rst;
	__u32 seq;     // TCP sequence number, host order
	__u32 payload; // TCP payload length in bytes
	__u16 window;  // advertised receive window, host order, unscaled
};

// Fills the TCP fields from a header; `ip_len` bytes follow the fixed IP
// header, of which `before_tcp` come before the TCP header (IPv6 extensions).
static __always_inline void take_tcp(struct parsed *p, const struct tcphdr *tcp, __u32 ip_len, __u32 before_tcp)
{
	__u32 hdr_len = before_tcp + tcp->doff * 4;
	p->is_tcp = 1;
	p->sport = tcp->source;
	p->dport = tcp->dest;
	p->syn = tcp->syn;
	p->ack = tcp->ack;
	p->fin = tcp->fin;
	p->rst = tcp->rst;
	p->seq = bpf_ntohl(tcp->seq);
	p->window = bpf_ntohs(tcp->window);
	p->payload = ip_len > hdr_len ? ip_len - hdr_len : 0;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct parsed *p, void *data, void *data_end)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end)
		return PARSE_SKIP;
	p->family = 4;
	p->src[2] = bpf_htonl(0xffff);
	p->dst[2] = bpf_htonl(0xffff);
	p->src[V4] = ip->saddr;
	p->dst[V4] = ip->daddr;
	// Options or a fragment (MF set, or a non-first one): counted, not tracked.
	if (ip->protocol != IPPROTO_TCP || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return PARSE_IP;
	struct tcphdr *tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > data_end) {
		// Header not in the linear area: pull it in and re-check.
		if (bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(*ip) + sizeof(*tcp)))
			return PARSE_IP;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + sizeof(struct ethhdr);
		tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return PARSE_IP;
	}
	take_tcp(p, tcp, bpf_ntohs(ip->tot_len), sizeof(*ip));
	return PARSE_IP;
}

// ICMPv6 neighbour discovery: router solicitation (133) .. redirect (137), RFC 4861.
#define ND_FIRST_TYPE 133
#define ND_LAST_TYPE 137
#define IPV6_EXT_MAX 4 // extension headers walked before TCP (more: counted, not tracked)

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct parsed *p, void *data, void *data_end)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > data_end)
		return PARSE_SKIP;
	p->family = 6;
	__builtin_memcpy(p->src, &ip6->saddr, 16);
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	// An IPv4-mapped source (never a real one on the wire) would share records
	// with the IPv4 client it names: counted, not tracked.
	if (!p->src[0] && !p->src[1] && p->src[2] == bpf_htonl(0xffff))
		return PARSE_IP;
	__u8 next = ip6->nexthdr;
	__u32 off = sizeof(struct ethhdr) + sizeof(*ip6);
	__u32 len = bpf_ntohs(ip6->payload_len); // what follows the fixed header
	if (next == IPPROTO_TCP) {
		// The common case, at a fixed offset: direct access, as for IPv4.
		struct tcphdr *tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) <= data_end) {
			take_tcp(p, tcp, len, 0);
			return PARSE_IP;
		}
	}
	// Extension headers, ICMPv6 and non-linear headers: read through the helper.
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
			__u8 ext[2];
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)))
				return PARSE_IP;
			__u32 ext_len = (ext[1] + 1) * 8;
			next = ext[0];
			off += ext_len;
		} else if (next == IPPROTO_FRAGMENT) {
			return PARSE_IP; // a fragment, first or not: counted, not tracked
		} else {
			break;
		}
	}
	if (next == IPPROTO_ICMPV6) {
		// Neighbour discovery (router solicitation .. redirect) is the kernels'
		// own bookkeeping: it comes and is answered while the app is frozen
		// (a namespace's kernel is not frozen), and the host sends it to a
		// neighbour it has not heard from, so counting it would wake a sleeper
		// for nothing. ARP is skipped for the same reason.
		__u8 type;
		if (bpf_skb_load_bytes(skb, off, &type, 1))
			return PARSE_IP;
		if (type >= ND_FIRST_TYPE && type <= ND_LAST_TYPE)
			return PARSE_SKIP;
		return PARSE_IP;
	}
	if (next != IPPROTO_TCP)
		return PARSE_IP;
	struct tcphdr tcp;
	if (bpf_skb_load_bytes(skb, off, &tcp, sizeof(tcp)))
		return PARSE_IP;
	take_tcp(p, &tcp, len, off - sizeof(struct ethhdr) - sizeof(struct ipv6hdr));
	return PARSE_IP;
}

// Ethernet only: attach refuses devices without an Ethernet header (agent/net/tc.ts).
static __always_inline int parse(struct __sk_buff *skb, struct parsed *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PARSE_SKIP;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(skb, p, data, data_end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(skb, p, data, data_end);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return PARSE_SKIP;
	// Another ethertype: the instance's if sent to it alone (a group frame, even
	// flooded, names nobody in particular).
	if (eth->h_dest[0] & 1)
		return PARSE_SKIP;
	return PARSE_OTHER;
}

// The instance whose own interface this is (doze_ifaces), or 0.
static __always_inline __u32 iface_key(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *key = bpf_map_lookup_elem(&doze_ifaces, &ifindex);
	return key ? *key : 0;
}

// The key of the instance an address names, or 0 (0.0.0.0 is nobody's key):
// an IPv4 address is its own key, an IPv6 one maps to it.
static __always_inline __u32 address_key(const struct parsed *p, const __u32 *addr)
{
	if (p->family == 4)
		return addr[V4];
	__u32 *key = bpf_map_lookup_elem(&doze_addr6, addr);
	return key ? *key : 0;
}

#ifndef DOZE_COUNT_ONLY
// The connection a packet belongs to, oriented client -> instance.
static __always_inline void conn_key(struct doze_conn_key *k, const struct parsed *p, __u32 key, int into)
{
	const __u32 *client = into ? p->src : p->dst;
	k->client_addr[0] = client[0];
	k->client_addr[1] = client[1];
	k->client_addr[2] = client[2];
	k->client_addr[3] = client[3];
	k->instance_key = key;
	k->client_port = into ? p->sport : p->dport;
	k->instance_port = into ? p->dport : p->sport;
}
#endif

static __always_inline __u32 check_mark(void)
{
	__u32 zero = 0;
	struct doze_settings *s = bpf_map_lookup_elem(&doze_settings, &zero);
	return s ? s->check_mark : 0;
}

// The state of the managed instance `key`, or NULL when it is not one.
static __always_inline __u32 *state_of(__u32 key)
{
	__u32 *slot = bpf_map_lookup_elem(&doze_slots, &key);
	return slot ? bpf_map_lookup_elem(&doze_state, slot) : NULL;
}

// On an instance's own interface, egress: the state of the instance a packet
// goes into, with its key in `key`; NULL for nobody's packet. An IP packet is
// the instance's by its destination address only: a bridge port (Nomad's and
// Docker's veths are) also carries frames flooded for another container whose
// MAC the bridge has forgotten (after 300 s), which must not wake this one.
// A frame of another ethertype is the interface's instance's.
static __always_inline __u32 *into_whom(struct __sk_buff *skb, const struct parsed *p, int kind, __u32 *key)
{
	if (kind == PARSE_IP) {
		*key = address_key(p, p->dst);
		return *key ? state_of(*key) : NULL;
	}
	*key = iface_key(skb);
	return *key ? state_of(*key) : NULL;
}

// Host-port instances (host network mode, Nomad's qemu driver with user-mode
// networking) have no interface of their own: their traffic crosses the node's
// interfaces addressed to a host port. Their key in every map is the port
// written as an address in 0.0.0.0/8 ("0.0.hi.lo"), which no instance has.
static __always_inline __u32 port_key(__u16 port_be)
{
	return bpf_htonl(bpf_ntohs(port_be));
}

// Health-check sources for host-port programs. On a host interface's ingress
// hook netfilter has not run yet, so a remote checker's packets carry no mark
// here: they are recognised by source address instead (healthChecks.fromSources).
struct check_net_key {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__type(key, struct check_net_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_check_nets SEC(".maps");

struct check_net6_key {
	__u32 prefixlen;
	__u32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__type(key, struct check_net6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} doze_check_nets6 SEC(".maps");

// A packet from a health-check source (healthChecks.fromSources), either family.
static __always_inline int from_check_source(const struct parsed *p)
{
	if (p->family == 4) {
		struct check_net_key src = { .prefixlen = 32, .addr = p->src[V4] };
		return bpf_map_lookup_elem(&doze_check_nets, &src) != 0;
	}
	struct check_net6_key src6 = { .prefixlen = 128 };
	__builtin_memcpy(src6.addr, p->src, 16);
	return bpf_map_lookup_elem(&doze_check_nets6, &src6) != 0;
}

static __always_inline int marked_check(struct __sk_buff *skb)
{
	// Most packets carry no mark at all: skip the settings lookup for them.
	if (!skb->mark)
		return 0;
	__u32 mark = check_mark();
	return mark && (skb->mark & mark);
}

#ifndef DOZE_COUNT_ONLY // connection tracking only
// The sender's sequence number just after this segment (SYN and FIN take one each).
static __always_inline __u32 segment_end(const struct parsed *p)
{
	return p->seq + p->payload + p->syn + p->fin;
}

// Moves a side's next sequence number forward to this segment's end, never
// back (serial-number arithmetic): a retransmission moves nothing.
static __always_inline void advance_next_seq(__u32 *next_seq, const struct parsed *p)
{
	__u32 end = segment_end(p);
	if ((__s32)(end - *next_seq) > 0)
		*next_seq = end;
}

static __always_inline int is_bare_ack(const struct parsed *p)
{
	return p->ack && !p->syn && !p->fin && !p->rst;
}

// A keepalive or zero-window probe (Linux tcp_xmit_probe_skb; Windows adds one
// garbage byte): a bare ACK that re-sends the last byte the peer already
// acknowledged (`next_seq` is the sender's next sequence number), to make it
// answer. Either kernel sends and answers keepalive probes even while the
// instance is frozen, so they are not traffic. The two kinds look the same on
// the wire; a zero-window probe is told apart by the window its receiver last
// advertised being 0 (`peer_window`): the sender has bytes queued for a peer
// that reads slowly, which is work in flight. An ordinary ACK carries the next
// sequence number itself and still counts: inbound ACKs keep a streaming
// response awake.
static __always_inline int is_keepalive_probe(const struct parsed *p, __u32 next_seq, __u16 peer_window)
{
	return peer_window && is_bare_ack(p) && p->payload <= 1 && p->seq == next_seq - 1;
}

// The client kernel's answer to the instance's keepalive probe: a bare ACK, no
// payload, at the client's next sequence number. Alone it looks like any
// ordinary ACK; it is told apart by coming first after a probe (CONN_PROBED).
// One that advertises window 0 answers a zero-window probe, and counts.
static __always_inline int is_probe_reply(const struct parsed *p, const struct doze_conn *conn, __u32 probed)
{
	return probed && p->window && is_bare_ack(p) && !p->payload && p->seq == conn->client_next_seq;
}

// Keeps CONN_CLIENT_WINDOW_CLOSED equal to "the client's last window was 0"
// (atomically, beside the FIN bits; only when it changes, which is rare).
static __always_inline void note_client_window(struct doze_conn *conn, const struct parsed *p)
{
	conn->client_window = p->window;
	__u32 closed = conn->flags & CONN_CLIENT_WINDOW_CLOSED;
	if (!p->window && !closed)
		__sync_fetch_and_or(&conn->flags, CONN_CLIENT_WINDOW_CLOSED);
	else if (p->window && closed)
		__sync_fetch_and_and(&conn->flags, ~CONN_CLIENT_WINDOW_CLOSED);
}

// An ended connection leaves the map at once: on a reset from either side, or
// on the second FIN (`fin_side` is this packet's sender). Left in place, closed
// connections pile up until LRU eviction (33,000 under wrk) and every read of
// the map dumps them. An absent entry means what a closed one did: not open,
// nothing in flight, no first-response stamp. Only a client's SYN creates an
// entry, so the last ACK or a retransmitted FIN brings nothing back.
// Deleting is the packet's last use of `conn`: a preallocated map may hand the
// element to another connection right away.
static __always_inline void forget_if_ended(struct doze_conn_key *k, struct doze_conn *conn, const struct parsed *p, __u32 fin_side)
{
	const __u32 both = CONN_FIN_CLIENT | CONN_FIN_SERVER;

	if (p->rst) {
		bpf_map_delete_elem(&doze_conns, k);
		return;
	}
	if (!p->fin)
		return;
	// Atomic: the two FINs can cross on two CPUs, and one of them must see both bits.
	__u32 before = __sync_fetch_and_or(&conn->flags, fin_side);
	if (((before | fin_side) & both) == both)
		bpf_map_delete_elem(&doze_conns, k);
}
#endif

// The IP protocol of a packet parse() did not track as TCP, and its UDP source port (network
// order; 0 for another protocol). Read from the header here, on the paths that need it (a wake,
// a talker outside TCP tracking), rather than kept by parse() for every packet.
static __always_inline void untracked_l4(struct __sk_buff *skb, const struct parsed *p, __u8 *protocol, __u16 *port)
{
	if (p->family == 4) {
		// Direct access, as parse_ipv4 read the header (a UDP talker pays 16 ns less than through
		// bpf_skb_load_bytes; bench/tc-cost.ts).
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct iphdr *ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > data_end) {
			*protocol = 0;
			return;
		}
		*protocol = ip->protocol;
		if (ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x1fff)))
			return; // not UDP, or a non-first fragment: no UDP header in it
		__u32 l4 = sizeof(struct ethhdr) + ip->ihl * 4; // ihl words, as sent
		__u16 *source = data + l4;
		if ((void *)(source + 1) <= data_end)
			*port = *source;
		else if (bpf_skb_load_bytes(skb, l4, port, 2))
			*port = 0;
		return;
	}
	// IPv6: its first next header (byte 6), and UDP's source port right after the fixed header.
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + 6, protocol, 1)) {
		*protocol = 0;
		return;
	}
	if (*protocol == IPPROTO_UDP && bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr), port, 2))
		*port = 0;
}

// The packet that woke a sleeper, into its wake event: only on this once-per-sleep
// path, so the per-packet cost stays what it was.
static __always_inline void describe_packet(struct __sk_buff *skb, const struct parsed *p, struct doze_wake_event *ev)
{
	if (p->family != 4 && p->family != 6)
		return;
	ev->src_family = p->family;
	ev->src_addr[0] = p->src[0];
	ev->src_addr[1] = p->src[1];
	ev->src_addr[2] = p->src[2];
	ev->src_addr[3] = p->src[3];
	if (!p->is_tcp) {
		untracked_l4(skb, p, &ev->protocol, &ev->src_port);
		return;
	}
	ev->protocol = IPPROTO_TCP; // an IPv6 TCP packet behind extension headers too
	ev->src_port = p->sport;
	ev->tcp_flags = (p->fin ? WAKE_TCP_FIN : 0) | (p->syn ? WAKE_TCP_SYN : 0) | (p->rst ? WAKE_TCP_RST : 0) | (p->ack ? WAKE_TCP_ACK : 0);
	ev->has_payload = p->payload ? 1 : 0;
}

#ifndef DOZE_NO_TALKERS
// Counts the packet's source in instance `key`'s top talkers (doze_talkers): `opened` a
// connection, or a packet outside TCP tracking. Plain stores and increments: two CPUs on one
// instance's table at once may lose a count or split a slot, which evidence can bear; an atomic
// add on every update would cost every caller.
static __always_inline void note_talker(struct __sk_buff *skb, const struct parsed *p, __u32 key, int opened, __u64 now)
{
	struct doze_talkers *t = bpf_map_lookup_elem(&doze_talkers, &key);
	if (!t)
		return;
	struct doze_talker *slot = &t->slot[0];
	__u64 oldest = ~0ULL;
	int found = 0;
	// The address as two 64-bit words: half the loads and compares per slot.
	__u64 src[2];
	__builtin_memcpy(src, p->src, sizeof(src));
	for (int i = 0; i < TALKER_SLOTS; i++) {
		struct doze_talker *s = &t->slot[i];
		if (s->addr[0] == src[0] && s->addr[1] == src[1]) {
			slot = s;
			found = 1;
			break;
		}
		if (s->last_ns < oldest) {
			oldest = s->last_ns;
			slot = s;
		}
	}
	if (!found) {
		slot->addr[0] = src[0];
		slot->addr[1] = src[1];
		slot->first_ns = now;
		slot->connections = 0;
		slot->packets = 0;
	}
	slot->last_ns = now;
	if (p->is_tcp) {
		slot->protocol = IPPROTO_TCP;
		slot->port = p->sport;
	} else {
		__u16 port = 0;
		untracked_l4(skb, p, &slot->protocol, &port);
		slot->port = port;
	}
	if (opened)
		slot->connections++;
	else
		slot->packets++;
}
#endif

// A packet into instance `key` (whose doze_state entry the caller looked up):
// count it, track its connection, wake a sleeper.
static __always_inline int into_instance(struct __sk_buff *skb, struct parsed *p, __u32 key, __u32 *state, int is_check)
{
	struct doze_counters *c = bpf_map_lookup_elem(&doze_counters, &key);
	__u64 now = bpf_ktime_get_ns();
	int opened = 0; // a client's SYN opened a new connection

#ifdef DOZE_COUNT_ONLY // bench/ builds a counting-only variant to price the tracking
	opened = p->is_tcp && p->syn && !p->ack;
#else
	if (p->is_tcp) {
		struct doze_conn_key k; // every byte set by conn_key
		conn_key(&k, p, key, 1);
		struct doze_conn *conn = bpf_map_lookup_elem(&doze_conns, &k);
		// Only a client's SYN opens a tracked connection, so replies to the
		// instance's own outbound connections are never taken for requests.
		if (p->syn && !p->ack) {
			opened = !conn; // a retransmitted SYN opens nothing new
			struct doze_conn fresh = { .last_ns = now, .client_next_seq = segment_end(p) };
			if (is_check)
				fresh.flags = CONN_CHECK;
			bpf_map_update_elem(&doze_conns, &k, &fresh, BPF_ANY);
			conn = bpf_map_lookup_elem(&doze_conns, &k);
		}
		if (conn) {
			// A connection that started marked stays a check connection.
			if (conn->flags & CONN_CHECK)
				is_check = 1;
			conn->last_ns = now;
			note_client_window(conn, p);
			// Whatever the client sends next settles the instance's probe.
			__u32 probed = conn->flags & CONN_PROBED;
			if (probed)
				__sync_fetch_and_and(&conn->flags, ~CONN_PROBED);
			if (is_keepalive_probe(p, conn->client_next_seq, conn->server_window) || is_probe_reply(p, conn, probed))
				return TC_ACT_UNSPEC; // alive, not active: no count, no stamp, no wake
			advance_next_seq(&conn->client_next_seq, p);
			if (p->payload)
				conn->client_payload_ns = now;
			forget_if_ended(&k, conn, p, CONN_FIN_CLIENT);
		}
	}
#endif

	if (is_check) {
		if (c)
			__sync_fetch_and_add(&c->checks, 1);
		return TC_ACT_UNSPEC;
	}
	if (c) {
		__sync_fetch_and_add(&c->packets, 1);
		c->last_seen_ns = now;
	}
#ifndef DOZE_NO_TALKERS // bench/ builds a variant without the table to price it
	// Top talkers on a new connection and on packets outside TCP tracking only: an open
	// connection's client is in doze_conns already, and noting it on its every packet would cost
	// each of them 9-12 ns (74 -> 83 ns a data segment, test_run, bench/tc-cost.ts), against none
	// this way. A datagram pays the table: 56 -> 69 ns.
#ifdef DOZE_TALKERS_EVERY_PACKET // bench/'s build of the alternative, to keep pricing it
	if (p->family)
#else
	if (p->family && (opened || !p->is_tcp))
#endif
		note_talker(skb, p, key, opened, now);
#else
	(void)opened;
#endif
	// Only the packet that wins the swap signals: one event per sleep. A swap can lose to the
	// agent's PAUSING -> SLEEPING (in place, between this read and the swap): read again and
	// swap again. The agent moves a sleeper at most once in that window, so two tries settle
	// it; the third is margin.
	for (int try = 0; try < 3; try++) {
		__u32 seen = *state;
		if (seen != DOZE_SLEEPING && seen != DOZE_PAUSING)
			break;
		if (__sync_val_compare_and_swap(state, seen, DOZE_SIGNALLED) == seen) {
			if (c) {
				// Arms the first-response stamp (out_of_instance) for this wake.
				c->reply_ns = 0;
				c->wake_ns = now;
			}
			struct doze_wake_event ev = {
				.instance_addr = key,
				.ifindex = skb->ifindex,
				.ts_ns = now,
			};
			describe_packet(skb, p, &ev);
			emit_event(skb, &ev);
			break;
		}
	}
	return TC_ACT_UNSPEC;
}

// A packet out of instance `key`: the server side of each connection.
// Returns 1 when `key` is a managed instance.
static __always_inline int out_of_instance(struct __sk_buff *skb, struct parsed *p, __u32 key)
{
	struct doze_counters *c = bpf_map_lookup_elem(&doze_counters, &key);
	if (!c)
		return 0;
	__sync_fetch_and_add(&c->out_packets, 1);
#ifdef DOZE_COUNT_ONLY
	return 1;
#else
	if (!p->is_tcp)
		return 1;
	struct doze_conn_key k;
	conn_key(&k, p, key, 0);
	struct doze_conn *conn = bpf_map_lookup_elem(&doze_conns, &k);
	if (!conn)
		return 1; // outbound connection of the instance: not a request
	__u64 now = bpf_ktime_get_ns();
	conn->last_ns = now;
	conn->server_window = p->window;
	if (p->syn) {
		conn->server_next_seq = segment_end(p); // the SYN-ACK: where the instance's sequence starts
	} else if (is_keepalive_probe(p, conn->server_next_seq, conn->client_window)) {
		// The instance's kernel probes an idle client (SO_KEEPALIVE on its accepted
		// sockets, as Go's net.Listen sets); the client's ACK answering it is marked.
		__sync_fetch_and_or(&conn->flags, CONN_PROBED);
		return 1;
	} else {
		advance_next_seq(&conn->server_next_seq, p);
	}
	if (p->payload) {
		conn->server_payload_ns = now;
		// The first answer to a client after a wake: one event, stamped once.
		// Checks do not count (the stub answers them while it sleeps).
		__u64 wake_ns = c->wake_ns;
		if (wake_ns && !c->reply_ns && !(conn->flags & CONN_CHECK) &&
		    __sync_val_compare_and_swap(&c->reply_ns, 0, now) == 0) {
			struct doze_wake_event ev = {
				.instance_addr = key,
				.ifindex = skb->ifindex,
				.ts_ns = now,
				.wake_ns = wake_ns,
			};
			emit_event(skb, &ev);
		}
	}
	forget_if_ended(&k, conn, p, CONN_FIN_SERVER);
	return 1;
#endif
}

// Instance's own interface (host side of a veth or tap), egress: packets into it.
SEC("tc/egress")
int doze_egress(struct __sk_buff *skb)
{
	struct parsed p = {};
	int kind = parse(skb, &p);
	if (kind == PARSE_SKIP)
		return TC_ACT_UNSPEC;
	__u32 key = 0;
	__u32 *state = into_whom(skb, &p, kind, &key);
	if (!state)
		return TC_ACT_UNSPEC; // not a managed instance
	return into_instance(skb, &p, key, state, marked_check(skb));
}

// Instance's own interface, ingress: packets out of it.
SEC("tc/ingress")
int doze_ingress(struct __sk_buff *skb)
{
	struct parsed p = {};
	int kind = parse(skb, &p);
	if (kind == PARSE_SKIP)
		return TC_ACT_UNSPEC;
	if (kind == PARSE_IP) {
		__u32 sender = address_key(&p, p.src);
		if (sender && out_of_instance(skb, &p, sender))
			return TC_ACT_UNSPEC;
	}
	__u32 owner = iface_key(skb); // the interface's instance (a link-local or undeclared source)
	if (owner)
		out_of_instance(skb, &p, owner);
	return TC_ACT_UNSPEC;
}

// A node interface's ingress hook (on lo, the only hook: it sees every local
// packet once): a packet to a managed host port goes into that instance, one
// from it (a reply on lo) goes out of it. Either family: a host port is one
// key whichever address reached it.
SEC("tc/host_in")
int doze_host_in(struct __sk_buff *skb)
{
	struct parsed p = {};
	if (parse(skb, &p) != PARSE_IP || !p.is_tcp)
		return TC_ACT_UNSPEC;
	__u32 key = port_key(p.dport);
	__u32 *state = state_of(key);
	if (state) {
		int is_check = marked_check(skb) || from_check_source(&p);
		return into_instance(skb, &p, key, state, is_check);
	}
	out_of_instance(skb, &p, port_key(p.sport));
	return TC_ACT_UNSPEC;
}

// A node interface's egress hook: replies of host-port instances leaving the node.
SEC("tc/host_out")
int doze_host_out(struct __sk_buff *skb)
{
	struct parsed p = {};
	if (parse(skb, &p) != PARSE_IP || !p.is_tcp)
		return TC_ACT_UNSPEC;
	out_of_instance(skb, &p, port_key(p.sport));
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
