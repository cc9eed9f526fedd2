//! Calibration: data (being written).
