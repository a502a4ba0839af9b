//! The `cloudai` binary's own parts: flags and configuration, the client commands and the
//! master's console (both clients of the HTTP API, rendering its typed answers with
//! the views in `render`). The master, the worker and the load generators are libraries of
//! their own.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod console;
pub mod profile;
mod render;
