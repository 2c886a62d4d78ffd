"""Deploy source root: re-exports every function target (one Cloud Function each)."""

from functions.api import api
from functions.workers import dispatch_job, process_chunk, reconcile

__all__ = ["api", "dispatch_job", "process_chunk", "reconcile"]
