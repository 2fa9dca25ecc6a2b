//! The single-threaded deterministic executor that drives every task of the driver.
