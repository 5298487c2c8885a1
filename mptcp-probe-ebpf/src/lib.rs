#![no_std]
//! Kernel programs are built as the `mptcp-probe` binary target; this library exists so the
//! user-space crate can depend on this package and be rebuilt when it changes.
