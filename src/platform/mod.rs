//! Block device implementations: memory, faulty (tests), file (host).
