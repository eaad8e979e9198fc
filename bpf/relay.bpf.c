// SPDX-License-Identifier: (MIT OR Apache-2.0)
//
// natpass's XDP fast path for TURN channels (RFC 8656 §12) over IPv4/UDP.
//
// Built from this file by build.rs with `clang -O2 -g -target bpf` (no libbpf headers: the
// few helpers it calls are declared below from <linux/bpf.h>'s numbering) and loaded by
// src/xdp.rs with aya. natpass's core fills the two route maps when a channel is bound or
// its permission refreshed, and clears them when the channel or the permission ends; every
// entry also carries its own deadline (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns and
// of Rust's Instant), so forwarding stops at the moment the userspace path would stop, even
// before userspace has swept the entry.
//
//   client --ChannelData--> listener   => strip the 4-byte header, send from the relay
//                                          address to the peer
//   peer   --UDP--> relay address      => add the header, send from the listener to the client
//
// Anything else -- STUN, Send/Data indications, unknown flows, IPv6, IP options, fragments,
// a ChannelData whose length field disagrees with the datagram (other than UDP padding to 4
// bytes), an expired route, a next
// hop not learned yet -- is XDP_PASS: the kernel delivers it to natpass's sockets as
// before, and the userspace path decides (and drops what it must).
//
// Next hops: the reply path is the arrival path. For each remote IP of a live route the
// program remembers the interface and the MAC addresses of the last packet that came from
// it (`neigh`), and sends to that IP the same way back. Until a remote has sent something
// through a route, packets to it go the userspace way (the kernel resolves ARP there).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define INLINE static __attribute__((always_inline)) inline

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)BPF_FUNC_xdp_adjust_head;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)BPF_FUNC_redirect_map;
static long (*bpf_check_mtu)(void *ctx, __u32 ifindex, __u32 *mtu_len, __s32 len_diff,
                             __u64 flags) = (void *)BPF_FUNC_check_mtu;

#define bswap16(x) __builtin_bswap16(x)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define htons(x) bswap16(x)
#define ntohs(x) bswap16(x)
#define ODD_BYTE_HIGH 1 // a datagram's byte at an odd offset is the high half of a word read from memory
#else
#define htons(x) (x)
#define ntohs(x) (x)
#define ODD_BYTE_HIGH 0
#endif

// ---- maps (layouts mirrored in src/xdp.rs; addresses and ports in network order) ----

// A client's channel: (client, listener, channel) -> (relay address, peer).
struct chan_key {
    __be32 client_ip;
    __be32 server_ip; // 0: a wildcard listener (matched after the exact address)
    __be16 client_port;
    __be16 server_port;
    __be16 channel;
    __u16 pad;
};

struct chan_val {
    __be32 relay_ip;
    __be32 peer_ip;
    __be16 relay_port;
    __be16 peer_port;
    __u32 pad;
    __u64 expires_ns;
    __u64 bytes; // payload relayed on this route (kept by userspace across refreshes)
};

// A peer's way back: (relay address, peer) -> (listener, client, channel).
struct peer_key {
    __be32 relay_ip;
    __be32 peer_ip;
    __be16 relay_port;
    __be16 peer_port;
};

struct peer_val {
    __be32 server_ip; // 0 until the client's first ChannelData told which local IP it uses
    __be32 client_ip;
    __be16 server_port;
    __be16 client_port;
    __be16 channel;
    __u16 pad;
    __u64 expires_ns;
    __u64 bytes; // payload relayed on this route (kept by userspace across refreshes)
};

struct neigh_val {
    __u32 ifindex;
    __u8 local_mac[ETH_ALEN];
    __u8 remote_mac[ETH_ALEN];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 65536);
    __type(key, struct chan_key);
    __type(value, struct chan_val);
} NATPASS_CHAN SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 65536);
    __type(key, struct peer_key);
    __type(value, struct peer_val);
} NATPASS_PEER SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __be32);
    __type(value, struct neigh_val);
} NATPASS_NEIGH SEC(".maps");

// The interfaces natpass attached to: the only ones a packet is redirected to.
struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, struct bpf_devmap_val);
} NATPASS_DEVS SEC(".maps");

enum stat {
    TO_PEER_PACKETS,
    TO_PEER_BYTES,
    TO_CLIENT_PACKETS,
    TO_CLIENT_BYTES,
    PASS_EXPIRED,
    PASS_NO_NEXT_HOP,
    PASS_MALFORMED,
    PASS_TOO_BIG,
    STATS,
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STATS);
    __type(key, __u32);
    __type(value, __u64);
} NATPASS_STATS SEC(".maps");

INLINE void count(__u32 what, __u64 n) {
    __u64 *v = bpf_map_lookup_elem(&NATPASS_STATS, &what);
    if (v)
        *v += n; // per-CPU: no atomics needed
}

// ---- checksums ----

INLINE __u16 fold(__u32 sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)sum;
}

// One's complement sum of 16-bit words as they lie in memory (byte order does not matter to
// a one's complement sum as long as every word is read the same way).
INLINE __u32 add32(__u32 sum, __be32 v) { return sum + (v & 0xffff) + (v >> 16); }
INLINE __u32 sub32(__u32 sum, __be32 v) { return add32(sum, ~v); }
INLINE __u32 add16(__u32 sum, __u16 v) { return sum + v; }
INLINE __u32 sub16(__u32 sum, __u16 v) { return sum + (__u16)~v; }

INLINE __u16 ip_checksum(struct iphdr *ip) {
    __u16 *w = (__u16 *)ip;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    return ~fold(sum);
}

// The packet's headers, copied out before they are moved.
struct hdrs {
    struct ethhdr eth;
    struct iphdr ip;
    struct udphdr udp;
} __attribute__((packed));

struct hdrs_chan {
    struct hdrs h;
    __be16 channel;
    __be16 length;
} __attribute__((packed));

INLINE int mac_eq(const __u8 *a, const __u8 *b) {
    int same = 1;
#pragma unroll
    for (int i = 0; i < ETH_ALEN; i++)
        same &= a[i] == b[i];
    return same;
}

// Learn the way back to the sender of a packet that matched a route.
INLINE void learn(struct xdp_md *ctx, struct hdrs *h) {
    __be32 ip = h->ip.saddr;
    struct neigh_val *n = bpf_map_lookup_elem(&NATPASS_NEIGH, &ip);
    if (n && n->ifindex == ctx->ingress_ifindex &&
        mac_eq(n->remote_mac, h->eth.h_source) &&
        mac_eq(n->local_mac, h->eth.h_dest))
        return;
    struct neigh_val v = {.ifindex = ctx->ingress_ifindex};
    __builtin_memcpy(v.local_mac, h->eth.h_dest, ETH_ALEN);
    __builtin_memcpy(v.remote_mac, h->eth.h_source, ETH_ALEN);
    bpf_map_update_elem(&NATPASS_NEIGH, &ip, &v, BPF_ANY);
}

// Where to send a packet for `ip`: NULL when not learned, or learned on an interface natpass
// is not attached to.
INLINE struct neigh_val *next_hop(struct xdp_md *ctx, __be32 ip) {
    struct neigh_val *n = bpf_map_lookup_elem(&NATPASS_NEIGH, &ip);
    if (!n)
        return 0;
    if (n->ifindex != ctx->ingress_ifindex) {
        __u32 ifindex = n->ifindex;
        if (!bpf_map_lookup_elem(&NATPASS_DEVS, &ifindex))
            return 0;
    }
    return n;
}

INLINE int send(struct xdp_md *ctx, struct neigh_val *n) {
    if (n->ifindex == ctx->ingress_ifindex)
        return XDP_TX;
    return bpf_redirect_map(&NATPASS_DEVS, n->ifindex, 0);
}

INLINE void set_l2(struct hdrs *h, struct neigh_val *n) {
    __builtin_memcpy(h->eth.h_dest, n->remote_mac, ETH_ALEN);
    __builtin_memcpy(h->eth.h_source, n->local_mac, ETH_ALEN);
}

// Client -> peer: the datagram is ChannelData for a bound channel.
INLINE int to_peer(struct xdp_md *ctx, struct hdrs_chan *p, __u16 payload, __u64 now) {
    struct hdrs *h = &p->h;
    struct chan_key k = {
        .client_ip = h->ip.saddr,
        .server_ip = h->ip.daddr,
        .client_port = h->udp.source,
        .server_port = h->udp.dest,
        .channel = p->channel,
    };
    struct chan_val *v = bpf_map_lookup_elem(&NATPASS_CHAN, &k);
    if (!v) {
        k.server_ip = 0;
        v = bpf_map_lookup_elem(&NATPASS_CHAN, &k);
        if (!v)
            return XDP_PASS;
    }
    // Header + length, or that padded to a multiple of 4 (RFC 8656 §12.5: allowed over UDP,
    // and what pion's and webrtc-rs's clients send). A truncated one, or one with anything
    // else after it, is the userspace path's to judge.
    __u16 data = ntohs(p->length);
    __u32 exact = (__u32)data + 4, pad = payload - exact;
    if (exact > payload || (pad && payload != ((exact + 3) & ~3u))) {
        count(PASS_MALFORMED, 1);
        return XDP_PASS;
    }
    if (now >= v->expires_ns) {
        count(PASS_EXPIRED, 1);
        return XDP_PASS;
    }
    struct chan_val route = *v;
    // The peer's way back needs the local IP this client talks to (wildcard listeners).
    struct peer_key pk = {
        .relay_ip = route.relay_ip,
        .peer_ip = route.peer_ip,
        .relay_port = route.relay_port,
        .peer_port = route.peer_port,
    };
    struct peer_val *back = bpf_map_lookup_elem(&NATPASS_PEER, &pk);
    // Only from a unicast frame to a unicast address: a broadcast or multicast one must not
    // choose the address the client is answered from.
    if (back && back->server_ip == 0 && back->client_ip == h->ip.saddr &&
        back->client_port == h->udp.source && back->server_port == h->udp.dest &&
        !(h->eth.h_dest[0] & 1) && (h->ip.daddr & 0xf0) != 0xe0 && h->ip.daddr != 0xffffffff)
        back->server_ip = h->ip.daddr;
    learn(ctx, h);
    struct neigh_val *n = next_hop(ctx, route.peer_ip);
    if (!n) {
        count(PASS_NO_NEXT_HOP, 1);
        return XDP_PASS;
    }
    struct neigh_val hop = *n;
    __u32 mtu_len = 0;
    if (hop.ifindex != ctx->ingress_ifindex && bpf_check_mtu(ctx, hop.ifindex, &mtu_len, -4, 0)) {
        count(PASS_TOO_BIG, 1);
        return XDP_PASS;
    }

    struct hdrs o = *h;
    __u16 old_len = o.udp.len, new_len = htons(ntohs(old_len) - 4 - pad);
    __u16 csum = o.udp.check;
    if (csum) {
        __u32 s = (__u16)~csum;
        // The padding leaves the datagram: take its bytes out of the sum, each as the half
        // of a 16-bit word its offset in the datagram (header 8 + 4 + data + i) gives it.
        // (A bound the verifier needs to accept packet offsets; no single-buffer XDP frame
        // holds 16 KiB.)
        if (data > 0x3fff)
            return XDP_PASS;
        __u8 *pp = (__u8 *)(p + 1) + data;
        // Opaque to the compiler, so that `pp + i + 1` below is this register plus a
        // constant: what the verifier needs to see to allow the read after the check.
        asm volatile("" : "+r"(pp));
#pragma unroll
        for (__u32 i = 0; i < 3; i++) {
            if (i < pad) {
                if ((void *)(pp + i + 1) > (void *)(long)ctx->data_end)
                    return XDP_PASS;
                __u16 b = pp[i];
                s = sub16(s, ((data + i) & 1) == ODD_BYTE_HIGH ? b << 8 : b);
            }
        }
        s = sub32(s, o.ip.saddr);
        s = sub32(s, o.ip.daddr);
        s = sub16(s, old_len);
        s = sub16(s, old_len);
        s = sub16(s, o.udp.source);
        s = sub16(s, o.udp.dest);
        s = sub16(s, p->channel);
        s = sub16(s, p->length);
        s = add32(s, route.relay_ip);
        s = add32(s, route.peer_ip);
        s = add16(s, new_len);
        s = add16(s, new_len);
        s = add16(s, route.relay_port);
        s = add16(s, route.peer_port);
        csum = ~fold(s);
        if (!csum)
            csum = 0xffff;
    }
    set_l2(&o, &hop);
    // The padding stays behind the new end of the IP datagram (the frame keeps its length, as
    // with Ethernet's own padding); the receiver's IP layer trims it.
    o.ip.tot_len = htons(ntohs(o.ip.tot_len) - 4 - pad);
    // A new datagram of the relay's, as its socket would send it: no TOS copied from the
    // client, DF, ID 0 (RFC 6864: an atomic datagram's ID is not used for reassembly).
    o.ip.tos = 0;
    o.ip.id = 0;
    o.ip.frag_off = htons(0x4000);
    o.ip.ttl = 64;
    o.ip.saddr = route.relay_ip;
    o.ip.daddr = route.peer_ip;
    struct iphdr ip = o.ip;
    ip.check = 0;
    o.ip.check = ip_checksum(&ip);
    o.udp.source = route.relay_port;
    o.udp.dest = route.peer_port;
    o.udp.len = new_len;
    o.udp.check = csum;

    if (bpf_xdp_adjust_head(ctx, 4))
        return XDP_PASS;
    void *start = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (start + sizeof(struct hdrs) > end)
        return XDP_DROP; // cannot happen: the datagram held these bytes before the move
    __builtin_memcpy(start, &o, sizeof(o));
    count(TO_PEER_PACKETS, 1);
    count(TO_PEER_BYTES, data);
    // A plain add: a route's packets in one direction are one flow, received on one queue
    // and so on one CPU at a time (NAPI); an atomic add cost 40 ns per packet here.
    v->bytes += data;
    return send(ctx, &hop);
}

// Peer -> client: a datagram to a relay address from a peer with a channel.
INLINE int to_client(struct xdp_md *ctx, struct hdrs *h, __u16 payload, __u64 now) {
    struct peer_key k = {
        .relay_ip = h->ip.daddr,
        .peer_ip = h->ip.saddr,
        .relay_port = h->udp.dest,
        .peer_port = h->udp.source,
    };
    struct peer_val *v = bpf_map_lookup_elem(&NATPASS_PEER, &k);
    if (!v)
        return XDP_PASS;
    if (now >= v->expires_ns) {
        count(PASS_EXPIRED, 1);
        return XDP_PASS;
    }
    struct peer_val route = *v;
    if (!route.server_ip) {
        count(PASS_NO_NEXT_HOP, 1);
        return XDP_PASS;
    }
    learn(ctx, h);
    struct neigh_val *n = next_hop(ctx, route.client_ip);
    if (!n) {
        count(PASS_NO_NEXT_HOP, 1);
        return XDP_PASS;
    }
    struct neigh_val hop = *n;
    __u32 mtu_len = 0;
    // 4 more bytes must fit the next hop, and the 16-bit lengths.
    if (ntohs(h->ip.tot_len) > 0xffff - 4 || bpf_check_mtu(ctx, hop.ifindex, &mtu_len, 4, 0)) {
        count(PASS_TOO_BIG, 1);
        return XDP_PASS;
    }

    struct hdrs_chan o = {.h = *h};
    __u16 old_len = h->udp.len, new_len = htons(ntohs(old_len) + 4);
    o.channel = route.channel;
    o.length = htons(payload);
    __u16 csum = h->udp.check;
    if (csum) {
        __u32 s = (__u16)~csum;
        s = sub32(s, h->ip.saddr);
        s = sub32(s, h->ip.daddr);
        s = sub16(s, old_len);
        s = sub16(s, old_len);
        s = sub16(s, h->udp.source);
        s = sub16(s, h->udp.dest);
        s = add32(s, route.server_ip);
        s = add32(s, route.client_ip);
        s = add16(s, new_len);
        s = add16(s, new_len);
        s = add16(s, route.server_port);
        s = add16(s, route.client_port);
        s = add16(s, o.channel);
        s = add16(s, o.length);
        csum = ~fold(s);
        if (!csum)
            csum = 0xffff;
    }
    set_l2(&o.h, &hop);
    o.h.ip.tot_len = htons(ntohs(o.h.ip.tot_len) + 4);
    o.h.ip.tos = 0;
    o.h.ip.id = 0;
    o.h.ip.frag_off = htons(0x4000);
    o.h.ip.ttl = 64;
    o.h.ip.saddr = route.server_ip;
    o.h.ip.daddr = route.client_ip;
    struct iphdr ip = o.h.ip;
    ip.check = 0;
    o.h.ip.check = ip_checksum(&ip);
    o.h.udp.source = route.server_port;
    o.h.udp.dest = route.client_port;
    o.h.udp.len = new_len;
    o.h.udp.check = csum;

    if (bpf_xdp_adjust_head(ctx, -4))
        return XDP_PASS;
    void *start = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (start + sizeof(struct hdrs_chan) > end)
        return XDP_DROP; // cannot happen: 4 bytes were added in front of a full header
    __builtin_memcpy(start, &o, sizeof(o));
    count(TO_CLIENT_PACKETS, 1);
    count(TO_CLIENT_BYTES, payload);
    v->bytes += payload; // (see to_peer)
    return send(ctx, &hop);
}

SEC("xdp")
int natpass_relay(struct xdp_md *ctx) {
    void *start = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (start + sizeof(struct hdrs) > end)
        return XDP_PASS;
    struct hdrs *h = start;
    if (h->eth.h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    // IPv4 without options, not a fragment, UDP.
    if (h->ip.version != 4 || h->ip.ihl != 5 || h->ip.protocol != IPPROTO_UDP)
        return XDP_PASS;
    if (h->ip.frag_off & htons(0x3fff))
        return XDP_PASS;
    __u16 tot = ntohs(h->ip.tot_len), ulen = ntohs(h->udp.len);
    if (tot != ulen + sizeof(struct iphdr) || ulen < sizeof(struct udphdr))
        return XDP_PASS;
    if (start + sizeof(struct ethhdr) + tot > end)
        return XDP_PASS; // shorter than it says
    __u16 payload = ulen - sizeof(struct udphdr);
    __u64 now = bpf_ktime_get_ns();
    if (payload >= 4 && start + sizeof(struct hdrs_chan) <= end) {
        struct hdrs_chan *p = start;
        // A channel number: 0x4000-0x7FFF (first two bits 01).
        if ((*(__u8 *)&p->channel & 0xc0) == 0x40) {
            int r = to_peer(ctx, p, payload, now);
            if (r != XDP_PASS)
                return r;
            // A peer may also send datagrams that look like ChannelData.
            start = (void *)(long)ctx->data;
            end = (void *)(long)ctx->data_end;
            if (start + sizeof(struct hdrs) > end)
                return XDP_PASS;
            h = start;
        }
    }
    return to_client(ctx, h, payload, now);
}

char _license[] SEC("license") = "Dual MIT/GPL";
