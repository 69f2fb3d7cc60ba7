//! Integration tests of the `dotevals` binary: one test binary, one module per
//! topic (ripgrep's layout). Every test gets its own directory, results store
//! and loopback server, so the tests run in parallel.
//!
//! Run with `cargo test --test it`.

mod server;
mod server_apis;
mod shards;
mod util;

mod browser;
mod cache;
mod compare;
mod concurrency;
mod datasets;
mod errors;
mod evaluators;
mod export;
mod golden;
mod grading_command;
mod grading_graders;
mod grading_judge;
mod grading_rescore;
mod grading_scores;
mod html_report;
mod json_output;
mod matrix;
mod merge;
mod overrides;
mod providers;
mod readme;
mod repeats;
mod resume;
mod schema;
mod spec_schema;
mod validation;

// Robustness: adaptive limits, rate limits, faults, crashes, concurrent
// processes, secrets and store upgrades.
mod support;

mod adaptive;
mod concurrent;
mod crash;
mod faults;
mod fleet;
mod postgres;
mod ratelimit;
mod replicas;
mod secrets;
mod throttle;
mod timing;
mod upgrade;

// Hardening: what testing from outside broke, one module per area.
mod hardening_cli;
mod hardening_data;
mod hardening_model;
mod hardening_runner;
mod hardening_store;

// The loopback servers' own shapes (capacity, batching, limits, 429 headers).
mod shapes;
