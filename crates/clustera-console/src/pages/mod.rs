//! The pages, one module each; [`layout`] holds what they share.

pub mod dead_letters;
pub mod groups;
pub mod kernels;
pub mod layout;
pub mod overview;
pub mod topics;
