//! The device tier: GPU HBM through cudarc, or an emulated device in host memory.
