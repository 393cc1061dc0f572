//! Attacks on `cidmirror serve` (being written).
