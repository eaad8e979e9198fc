// A wire for the XDP lab's NIC-like mode (scripts/xdp-lab.sh, XDPLAB_NIC=1): every frame that
// arrives on one veth end is redirected, untouched, out of the interface OUT (its ifindex, given
// at build time with -DOUT=N). Redirected frames reach the next veth as XDP frames in pages with
// XDP's headroom, which is how a NIC's driver hands frames to XDP, instead of as the sending
// socket's skbs that veth has to copy on the receiving side first.
#include <linux/bpf.h>
#ifndef OUT
#error "build with -DOUT=<ifindex>"
#endif
static long (*const redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
__attribute__((section("xdp"), used)) int wire(struct xdp_md *ctx) { return redirect(OUT, 0); }
char _license[] __attribute__((section("license"), used)) = "Dual MIT/GPL";
