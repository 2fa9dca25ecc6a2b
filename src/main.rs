//! `raid`: with the `std` feature (the default), the Orion RAID host tool (the driver's
//! engine on Linux, `entry/host.rs`); without it, the freestanding Orion driver
//! (`entry/orion/`): no std, no libc, its own entry point, talking to the kernel over a
//! frame channel.
#![cfg_attr(not(feature = "std"), no_std, no_main, no_builtins)]

mod entry {
    #[cfg(feature = "std")]
    pub mod host;
    #[cfg(not(feature = "std"))]
    pub mod orion;
}

#[cfg(feature = "std")]
fn main() {
    entry::host::main();
}
