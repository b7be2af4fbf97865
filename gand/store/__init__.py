"""gand's database: job states, the ORM models, migrations and the Store that uses them."""
from gand.store.db import Store
from gand.store.models import (Artifact, Checkpoint, Dataset, Evaluation, Event, Job, Metric,
                               Worker)
from gand.store.states import ACTIVE, TERMINAL, TRANSITIONS, JobStatus, parse_status

__all__ = ["ACTIVE", "TERMINAL", "TRANSITIONS", "Artifact", "Checkpoint", "Dataset", "Evaluation", "Event", "Job",
           "JobStatus", "Metric", "Store", "Worker", "parse_status"]
