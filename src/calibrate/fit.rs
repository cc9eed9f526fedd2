//! Calibration: fit (being written).
