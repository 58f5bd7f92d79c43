//! Produce side of the wire protocol (filled in by the produce work).
