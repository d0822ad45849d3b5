//! Configuration and domain types shared by every vidhost crate.
//!
//! Nothing here does I/O except reading configuration files: this crate is the
//! vocabulary the other crates speak.

pub mod config;
pub mod domain;
pub mod time;

pub use config::Config;
