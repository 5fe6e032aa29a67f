//! Key exchange (helper B fills this in).
