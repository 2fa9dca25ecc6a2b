//! Orion RAID: the software RAID driver core of Orion OS (`no_std` + `alloc`).
//!
//! The same engine runs inside the Orion driver process and, with the `std` feature, as the
//! Linux host tool. See `DESIGN.md` in the shared design notes for the architecture.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod api;
pub mod array;
pub mod block;
pub mod driver;
pub mod executor;
#[cfg(feature = "std")]
pub mod host;
pub mod jobs;
pub mod layout;
pub mod manage;
pub mod metadata;
pub mod monitor;
pub mod parity;
pub mod platform;
pub mod prelude;
pub mod rng;
