# The same pipeline for Snakemake (workstation or HPC), built from dvc.yaml through DVC's parser:
# one definition of the DAG, no drift (tests/test_dag.py compares both tools' graphs).
#   snakemake --cores 8                      # like `dvc repro`
#   snakemake --profile profiles/slurm       # on a SLURM cluster (docs/hpc.md)
# Each rule asks for the threads, memory, wall time and GPUs of `resources.<stage>` in params.yaml
# and passes its threads to the stage (`--threads`, i.e. runtime.threads). Logs: logs/<rule>.log.
# The default target ends with `dvc commit`, so DVC knows the results (`dvc status` is clean).
from pipeline.config import load_params
from pipeline.dag import is_directory, job_for, load_stages, params_signature, refresh, rule_inputs

PARAMS = load_params("params.yaml")
STAGES = load_stages(".")
if workflow.is_main_process:
    # what DVC runs on every repro: the fingerprint of each dataset's files, rewritten only when
    # they changed, so its mtime tells Snakemake which prepare reruns (docs/hpc.md)
    refresh(STAGES)
ENVIRONMENT = "environment.yml"  # used with --software-deployment-method conda


def _outputs(stage):
    return [directory(o) if is_directory(o) else o for o in stage.outs]


rule all:
    # every stage's outputs, then record them in dvc.lock and the DVC cache: the same state
    # `dvc repro` leaves (dvc commit hashes what Snakemake produced, it reruns nothing)
    default_target: True
    localrule: True
    input:
        [o for s in STAGES for o in s.outs],
    log:
        "logs/dvc_commit.log",
    shell:
        "dvc commit --force > {log} 2>&1"


for _stage in STAGES:
    _job = job_for(_stage, PARAMS, config)

    rule:
        name:
            _stage.rule
        input:
            rule_inputs(_stage),
        output:
            _outputs(_stage),
        log:
            f"logs/{_stage.rule}.log",
        params:
            # the command goes through params: a `shell:` expression is evaluated when the job
            # runs, by which time the loop variable names the last stage
            cmd=_stage.cmd,
            signature=params_signature(_stage),
        threads: _job.threads
        resources:
            **_job.resources,
        localrule: _job.local
        conda:
            ENVIRONMENT
        shell:
            "{params.cmd} --threads {threads} 2>&1 | tee {log}"
