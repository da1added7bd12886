"""Closed-loop episodes and their evaluation over environment sets."""

from whatmatters.eval.episode import EpisodeResult, run_episode, tracking_cost
from whatmatters.eval.evaluate import EvaluationResult, evaluate

__all__ = ["EpisodeResult", "EvaluationResult", "evaluate", "run_episode", "tracking_cost"]
