//! placeholder: parity
