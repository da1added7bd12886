"""The paper's comparison: weightings x rollout lengths x seeds, fine-tuned and evaluated in closed loop."""

from whatmatters.experiment.config import ExperimentConfig, load_experiment_config
from whatmatters.experiment.report import fig2_data, write_report
from whatmatters.experiment.signatures import run_id
from whatmatters.experiment.sweep import SweepResult, run_sweep

__all__ = ["ExperimentConfig", "SweepResult", "fig2_data", "load_experiment_config", "run_id", "run_sweep", "write_report"]
