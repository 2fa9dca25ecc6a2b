//! `raid`: the Orion RAID host tool.
fn main() {}
