//! The complexity scorer (being written).
