"""Typed training configuration: the schema (``schema``), a checked dataclass from a mapping (``typed``),
presets, YAML files and overrides (``reading``), and the keys renamed by this release (``renamed``)."""
from __future__ import annotations

from .reading import (PRESET_DIR, dump_config, from_dict, load_config, merge, parse_override, preset_dict,
                      preset_names, read_config, save_config)
from ..errors import AdvlabDeprecationWarning
from .schema import (CONFIG_VERSION, PART_KINDS, CheckpointConfig, DataConfig, DistributedConfig, EvaluationConfig, ImbalanceConfig,
                     InitConfig, KNNConfig, LabelNoiseConfig, LoggingConfig, ModelConfig, OptimizerConfig, PartConfig,
                     ScheduleConfig, TrainConfig, TrainingConfig, ValidationConfig, checkpoint_interval)
from .typed import dataclass_from_mapping

__all__ = ["PRESET_DIR", "dump_config", "from_dict", "load_config", "merge", "parse_override", "preset_dict",
           "preset_names", "read_config", "save_config", "AdvlabDeprecationWarning", "CONFIG_VERSION", "PART_KINDS",
           "CheckpointConfig", "DataConfig", "DistributedConfig", "EvaluationConfig", "ImbalanceConfig", "InitConfig", "KNNConfig",
           "LabelNoiseConfig", "LoggingConfig", "ModelConfig", "OptimizerConfig", "PartConfig", "ScheduleConfig",
           "TrainConfig", "TrainingConfig", "ValidationConfig", "checkpoint_interval", "dataclass_from_mapping"]
