pub mod admin;
pub mod documents;
pub mod ops;
pub mod tenant;
