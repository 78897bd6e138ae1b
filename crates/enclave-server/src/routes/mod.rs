pub mod admin;
pub mod documents;
pub mod jobs;
pub mod ops;
mod paging;
pub mod sessions;
pub mod tenant;
pub mod usage;
