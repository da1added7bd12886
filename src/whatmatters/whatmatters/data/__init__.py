"""Recorded data: rosbag2 (MCAP) episodes and training datasets built from them."""
