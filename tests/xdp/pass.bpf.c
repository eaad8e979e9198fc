// An XDP program that passes everything. The lab attaches it to the far ends of its veth
// pairs: a veth delivers frames another veth's XDP program sends (XDP_TX, XDP_REDIRECT) only
// when its peer runs XDP too (or has GRO on, which in practice delivers them in bursts).
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] __attribute__((section("license"), used)) = "Dual MIT/GPL";
