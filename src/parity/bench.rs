//! Throughput measurements of the parity engines (`raid bench parity`).
