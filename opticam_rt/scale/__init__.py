"""Dataset scale: run ``explain`` and ``evaluate`` batches on a Ray cluster (optional extra ``[ray]``).

Importing this package does not import Ray; a run does, and without Ray installed it fails with
a one-line error naming the extra. The batches, the per-batch work and the writing of results
are the single-process ones (``evaluation.runner.plan_batches`` / ``evaluate_batch`` /
``record_outcome``, ``runtime.files.explain_batch`` / ``write_outputs``); only where a batch
runs changes.
"""

from opticam_rt.scale.config import RayConfig, require_ray
from opticam_rt.scale.drivers import evaluate_dataset_on_ray, explain_files_on_ray
from opticam_rt.scale.ray_executor import RayBatchExecutor

__all__ = ["RayBatchExecutor", "RayConfig", "evaluate_dataset_on_ray", "explain_files_on_ray", "require_ray"]
