//! `streamd top`, the live ratatui dashboard.
//!
//! This crate is a placeholder until the dashboard issue: it owns no code yet so
//! that the workspace already has the shape the design card gives it.
#![forbid(unsafe_code)]
