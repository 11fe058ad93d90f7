//! restore-cmd logic (in progress).
