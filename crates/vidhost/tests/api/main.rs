//! Black-box tests: the real binary on a loopback port, driven over HTTP.

mod accounts;
mod analytics;
mod cli;
mod client;
mod delivery;
mod helpers;
mod mfa;
mod ops;
mod pipeline;
mod proxy;
mod ratelimit;
mod tus;
mod uploads;
mod videos;
mod web;
