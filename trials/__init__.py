"""One training run: config, data, loop, packed runs and the Ray Tune adapter."""

from trials.config import TrialConfig
from trials.data import DataError, Dataset, load_dataset
from trials.trial import TrialResult, run_trial

__all__ = ["DataError", "Dataset", "TrialConfig", "TrialResult", "load_dataset", "run_trial"]
