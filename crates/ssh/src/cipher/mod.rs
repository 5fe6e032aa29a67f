//! Binary packet protection (helper A fills this in).
