//! Compiles the VP8 shim (csrc/, see vp8_shim.c for why a shim) against the installed libvpx
//! headers and links libvpx statically: the images' streamer is a `+crt-static` binary, and a
//! static libvpx.a also spares every other build a runtime libvpx package. Debian's
//! libvpx-dev provides both the headers and libvpx.a (position-independent, so static-pie
//! links).

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    let mut build = cc::Build::new();
    build
        .file("csrc/vp8_shim.c")
        .file("csrc/vp8_dec.c")
        .warnings(true);
    // Where libvpx.a is, as the C compiler would find it (the multiarch directory on Debian).
    let probe = build
        .get_compiler()
        .to_command()
        .arg("-print-file-name=libvpx.a")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let lib = std::path::Path::new(&probe);
    if !lib.is_absolute() || !lib.is_file() {
        panic!(
            "guest-stream needs libvpx's headers and static library for VP8: \
             apt-get install -y libvpx-dev (the C compiler found no libvpx.a: {probe:?})"
        );
    }
    if let Err(e) = build.try_compile("gk_vp8_shim") {
        panic!(
            "compiling the VP8 shim failed ({e}); are libvpx's headers installed? \
             apt-get install -y libvpx-dev"
        );
    }
    if let Some(dir) = lib.parent() {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rustc-link-lib=static=vpx");
    // libvpx.a's own needs (its pkg-config Libs.private: -lm -lpthread; pthread is in libc).
    println!("cargo:rustc-link-lib=m");
}
