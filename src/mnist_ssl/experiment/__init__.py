"""The experiment layer: the stages of a run, the run folder's names, and the scheduler.

- :mod:`runtime`: device, seeds, threads, determinism.
- :mod:`rundir`: :class:`RunDir` (and the job folders), the one owner of every file name.
- :mod:`data`: the tensors a run trains and tests on, and the phases' view functions.
- :mod:`stages`: pretrain, frozen evaluation, fine-tune (LP-FT head init), evaluate, TTA.
- :mod:`run`: one (method, seed) run through the stages; the single-stage commands' runs.
- :mod:`scheduler`: the stop flag and the one scheduler of (method, seed) runs.
- :mod:`reproduce`, :mod:`label_efficiency`: the two experiments built from the stages.

Nothing here imports the command line; the commands import this.
"""
