"""Training: pretraining on torque residuals and (later) sensitivity-weighted fine-tuning."""
