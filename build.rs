//! Builds the XDP fast path's eBPF program (bpf/relay.bpf.c) from source with clang
//! (`clang -O2 -g -target bpf`; Debian's `clang` package). No prebuilt object is kept in the
//! repository. Without clang the crate still builds: the object is empty and `--xdp` explains
//! at start why the fast path is off (NATPASS_XDP_BUILD_ERROR).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/relay.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("relay.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The UAPI headers' <asm/types.h> lives under the multiarch directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let result = if !linux {
        Err("XDP is Linux only".to_string())
    } else {
        Command::new(&clang)
            .args([
                "-O2", "-g", "-Wall", "-target", "bpf", "-I", &multiarch, "-c", src, "-o",
            ])
            .arg(&out)
            .output()
            .map_err(|e| {
                format!("{clang} not found ({e}); install clang to build the XDP fast path")
            })
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{clang} failed on {src}: {}",
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .next()
                            .unwrap_or("")
                    ))
                }
            })
    };
    if let Err(why) = result {
        println!("cargo:warning=XDP fast path not built: {why}");
        println!("cargo:rustc-env=NATPASS_XDP_BUILD_ERROR={why}");
        std::fs::write(&out, b"").expect("write the empty object");
    }
}
