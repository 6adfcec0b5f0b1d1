"""The integration bridge's pipeline: one module per feature, computed per network in
`engine` (incrementally, by a `DatapathComputer` per host), assembled in `assembly`."""

from controller.core.pipeline.assembly import DatapathComputer, DatapathConfig, compute_datapath
from controller.core.pipeline.tables import PipelineError

__all__ = ["DatapathComputer", "DatapathConfig", "PipelineError", "compute_datapath"]
