//! The host tier: 64-byte-aligned DRAM slabs of rows within a byte budget.
