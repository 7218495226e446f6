//! The client engine (being written).
