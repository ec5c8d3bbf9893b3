"""`mdm variance` and `mdm fit-ppots`: the profiler (mdm.variance) run on the model and data of a run.

    spec  the YAML spec: a run's `model` and `data` sections (mdm train's language) + pilot sizes; loading
    cli   registers both subcommands (heavy imports happen inside the commands)
"""
