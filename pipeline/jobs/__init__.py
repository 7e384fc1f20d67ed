"""Jobs: the state machine, the stage contract, the runner and its published state.

- :mod:`~pipeline.jobs.states`: observation and job states, the stage specs;
- :mod:`~pipeline.jobs.contract`: what a stage function takes, returns and raises (no
  scheduler, no store: a stage module imports only this);
- :mod:`~pipeline.jobs.runner`: claims and runs jobs on APScheduler's pools;
- :mod:`~pipeline.jobs.runner_state`: the param state views watch;
- :mod:`~pipeline.jobs.default_stages`: the registry wiring every stage.
"""
