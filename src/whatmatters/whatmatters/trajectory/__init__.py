"""Reference trajectories for the tracking task."""

from whatmatters.trajectory.fourier import FourierConfig, FourierTrajectory, sample_fourier_trajectory

__all__ = ["FourierConfig", "FourierTrajectory", "sample_fourier_trajectory"]
