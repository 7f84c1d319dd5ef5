//! The image model: media types, manifest/index/config documents kept as their original bytes,
//! and the platform guard that picks exactly one image manifest.

pub mod doc;
pub mod error;
pub mod media;
pub mod select;

pub use doc::{Config, Descriptor, Doc, Index, JSON_BYTES_MAX, Manifest};
pub use error::ImageError;
pub use media::{Compression, Family};
pub use select::{Fetch, Selected};
