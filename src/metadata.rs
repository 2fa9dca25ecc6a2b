//! placeholder: metadata
