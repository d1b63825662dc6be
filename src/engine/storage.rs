//! The storage tier: the whole table in a file of checksummed 4 KiB-aligned pages.
