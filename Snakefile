# The same pipeline for Snakemake (workstation or HPC), built from dvc.yaml through DVC's parser:
# one definition of the DAG, no drift (tests/test_dag.py compares both tools' graphs).
#   snakemake --cores 8                      # like `dvc repro`
#   snakemake --profile profiles/slurm       # on a SLURM cluster (GPU stages get a GPU)
from pipeline.dag import is_directory, load_stages, params_signature

configfile: "params.yaml"

STAGES = load_stages(".")
GPU_STAGES = ("teacher", "features", "finetune", "embed")


def _outputs(stage):
    return [directory(o) if is_directory(o) else o for o in stage.outs]


rule all:
    default_target: True
    input:
        [o for s in STAGES for o in s.outs],


for _stage in STAGES:

    rule:
        name:
            _stage.rule
        input:
            _stage.deps,
        output:
            _outputs(_stage),
        params:
            # the command goes through params: a `shell:` expression is evaluated when the job
            # runs, by which time the loop variable names the last stage
            cmd=_stage.cmd,
            signature=params_signature(_stage),
        resources:
            gpu=1 if _stage.name.split("@")[0] in GPU_STAGES else 0,
            slurm_partition=config.get("slurm_gpu_partition" if _stage.name.split("@")[0] in GPU_STAGES
                                       else "slurm_cpu_partition", "")
        shell:
            "{params.cmd}"
