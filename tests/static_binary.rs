//! README: "The `Dockerfile` builds a static binary (multi-stage, `FROM scratch`)".
//!
//! The Dockerfile links against musl (`rust:alpine`). Neither a container engine nor the musl
//! Rust target can be had on this machine (rustup's target downloads are not reachable; no
//! package registry here ships a musl std for this toolchain), so this proves the closest honest
//! thing: the same crate graph (rustls + ring, no OpenSSL) links fully static for the gnu target
//! with `crt-static`, and the result runs the way the image runs it — alone in an empty root
//! directory (as `FROM scratch`), as user 65532, reading /etc/antibody/antibody.yml.
//!
//! The build goes to `target/static` (its own target dir and lock, so it can run inside
//! `cargo test`); a debug build, since linking, not optimisation, is the subject. The ordinary
//! dynamically linked test binary is put through the same checks and must fail them: the
//! checks can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;

/// Why an ELF64 little-endian executable needs a dynamic loader or shared libraries; empty when
/// it needs neither.
fn dynamic_dependencies(path: &Path) -> Vec<String> {
    let elf = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(elf.len() > 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1, "not ELF64 LE");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().expect("8 bytes"));
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let mut found = Vec::new();
    for header in (0..phnum).map(|i| phoff + i * phentsize) {
        let (offset, size) = (u64_at(header + 8) as usize, u64_at(header + 32) as usize);
        match u32_at(header) {
            PT_INTERP => {
                let interpreter = String::from_utf8_lossy(&elf[offset..offset + size]);
                found.push(format!("interpreter {}", interpreter.trim_end_matches('\0')));
            }
            PT_DYNAMIC => {
                // (d_tag, d_val) pairs; a static-pie binary has this section, but no DT_NEEDED.
                let needed = (offset..offset + size).step_by(16).filter(|&entry| u64_at(entry) == DT_NEEDED).count();
                if needed > 0 {
                    found.push(format!("{needed} shared libraries (DT_NEEDED)"));
                }
            }
            _ => {}
        }
    }
    found
}

/// Run `binary` as the image does: the only file in an empty root besides the config, as the
/// image's user. Its exit status and output.
fn run_in_empty_root(binary: &Path, args: &[&str]) -> (bool, String) {
    // Next to the build (one filesystem): the debug binary is hard-linked, not copied.
    let root = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).expect("temp dir");
    if std::fs::hard_link(binary, root.path().join("antibody")).is_err() {
        std::fs::copy(binary, root.path().join("antibody")).expect("copy the binary");
    }
    std::fs::create_dir_all(root.path().join("etc/antibody")).expect("etc dir");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("antibody.yml");
    std::fs::copy(config, root.path().join("etc/antibody/antibody.yml")).expect("copy antibody.yml");
    // The image's user must be able to enter the directory.
    let _ = Command::new("chmod").arg("0755").arg(root.path()).status();
    // Found before the environment is cleared (the binary must need none of it).
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot"].into_iter().find(|p| Path::new(p).exists()).expect("chroot");
    let out = Command::new(chroot)
        .arg("--userspec=65532:65532")
        .arg(root.path())
        .arg("/antibody")
        .args(args)
        .env_clear()
        .output()
        .expect("run chroot");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn build_static() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target/static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // An explicit --target keeps RUSTFLAGS off build scripts and proc macros (host code).
    let out = Command::new(cargo)
        .args(["build", "--locked", "--quiet", "--bin", "antibody", "--target", TARGET])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // No debug info: a third of the build time and most of its disk. tests/run.sh runs this
        // test once before the suite starts, so there it is a quick check.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "static build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target_dir.join(TARGET).join("debug/antibody")
}

#[test]
fn the_binary_links_statically_and_runs_in_an_empty_root() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))),
        "this test needs root (chroot into an empty directory, as FROM scratch)"
    );
    // Control: the ordinary build is dynamic, and fails both checks.
    let dynamic = Path::new(env!("CARGO_BIN_EXE_antibody"));
    let needs = dynamic_dependencies(dynamic);
    assert!(needs.iter().any(|n| n.starts_with("interpreter")), "the ordinary build is dynamic: {needs:?}");
    let (ok, output) = run_in_empty_root(dynamic, &["--version"]);
    assert!(!ok, "a dynamic binary cannot run without its loader: {output}");

    let binary = build_static();
    assert_eq!(dynamic_dependencies(&binary), Vec::<String>::new(), "{} is not static", binary.display());
    let (ok, output) = run_in_empty_root(&binary, &["--version"]);
    assert!(ok && output.starts_with("antibody "), "--version in an empty root: {output}");
    // The image's config path, parsed and validated with nothing else on the filesystem.
    let (ok, output) =
        run_in_empty_root(&binary, &["check-config", "--config", "/etc/antibody/antibody.yml", "--offline"]);
    assert!(ok, "check-config in an empty root: {output}");
}
