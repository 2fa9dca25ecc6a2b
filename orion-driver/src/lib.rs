//! Orion driver framework: the interface between the microkernel and a userspace driver.
#![no_std]
