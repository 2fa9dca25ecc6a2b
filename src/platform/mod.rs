//! Block device implementations: memory, faulty (tests and simulation), file (host).

pub mod faulty;
#[cfg(feature = "std")]
pub mod file;
pub mod memory;
#[cfg(feature = "std")]
pub mod open;
