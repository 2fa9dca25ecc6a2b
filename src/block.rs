//! The asynchronous block device contract every member disk and every array implements.
