//! The REST types shared by hutchd and hutch, in LXD's `/1.0` shapes, the response
//! envelope, and the table of instance config keys. No I/O.

pub mod config;
pub mod image;
pub mod instance;
pub mod network;
pub mod operation;
pub mod profile;
pub mod response;
pub mod schedule;
pub mod server;
pub mod storage;

pub use response::{Response, ResponseType};
