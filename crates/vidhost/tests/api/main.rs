//! Black-box tests: the real binary on a loopback port, driven over HTTP.

mod accounts;
mod delivery;
mod helpers;
mod ops;
mod uploads;
mod videos;
