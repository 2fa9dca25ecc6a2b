//! placeholder: layout
