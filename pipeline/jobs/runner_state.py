"""What the job runner publishes for views to watch."""

from __future__ import annotations

import threading

import param


class RunnerState(param.Parameterized):
    """Live state of the job runner; workers set it inside ``param.edit_constant``."""

    counts = param.Dict(default={}, constant=True, doc="Observations per state.")
    queue_depth = param.Dict(default={}, constant=True,
                             doc="Observations waiting for each stage.")
    jobs = param.Dict(default={}, constant=True, doc="Jobs per job state.")
    running = param.List(default=[], constant=True, item_type=dict, doc=(
        "Running jobs: dicts with job_id, observation_id, stage, attempt, progress (0-1), "
        "started_utc."))
    last_error = param.String(default="", constant=True,
                              doc="The most recent stage failure, 'obs stage: message'.")
    scheduler_running = param.Boolean(default=False, constant=True,
                                      doc="True while the background scheduler runs.")
    registered_stages = param.List(default=[], constant=True, item_type=str,
                                   doc="Stages with a function registered.")
    paused = param.Boolean(default=False, doc="When set, no new jobs are claimed.")
    revision = param.Integer(default=0, constant=True,
                             doc="Bumped on every change, so a view can watch one thing.")

    def __init__(self, **params):
        super().__init__(**params)
        # Workers publish from several threads; param itself is not thread-safe.
        self._publish_lock = threading.Lock()

    def publish(self, **values: object) -> None:
        """Set constant params (from any thread); bump the revision once if any changed."""
        with self._publish_lock:
            changed = {k: v for k, v in values.items() if getattr(self, k) != v}
            if changed:
                with param.edit_constant(self):
                    self.param.update(**changed, revision=self.revision + 1)
