//! Calibration: eval (being written).
