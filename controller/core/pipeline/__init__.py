"""The integration bridge's pipeline: one module per feature, assembled in `assembly`."""

from controller.core.pipeline.assembly import DatapathConfig, compute_datapath
from controller.core.pipeline.tables import PipelineError

__all__ = ["DatapathConfig", "PipelineError", "compute_datapath"]
