"""Deploy source root: re-exports every function target (one Cloud Function each)."""

from functions.api import api
from functions.exports import deliver_notification, run_export
from functions.workers import dispatch_job, process_chunk, reconcile

__all__ = ["api", "deliver_notification", "dispatch_job", "process_chunk", "reconcile", "run_export"]
