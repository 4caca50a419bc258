//! What a standby answers while it waits (filled in below).
