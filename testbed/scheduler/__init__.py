"""The testbed kube-scheduler: profiles, filters, extenders, leader election, per-minor config."""

from .cli import main
from .config import ConfigError, SchedulerConfig, decode_config, decode_policy
from .scheduler import Scheduler

__all__ = ["ConfigError", "Scheduler", "SchedulerConfig", "decode_config", "decode_policy", "main"]
