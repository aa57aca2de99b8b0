#!/bin/bash
# Pyxis through an srun wrapper (ClearML's "Slurm with Pyxis" docs, for
# clusters without the #SBATCH container options).
#SBATCH --job-name=clearml_task_${CLEARML_TASK.id}
#SBATCH --ntasks=1
#SBATCH --output=task-${CLEARML_TASK.id}-%j.log
#SBATCH --partition debug
#SBATCH --nodes=${CLEARML_TASK.hyperparams.properties.num_nodes.value:1}
${CLEARML_PRE_SETUP}
export CLEARML_MULTI_NODE_SINGLE_TASK=1
srun() {
    command srun \
        --container-image="${CLEARML_TASK.container.image}" \
        --container-remap-root \
        --container-writable \
        --container-mounts=$CLEARML_AGENT__AGENT__VENVS_DIR/clearml.conf:$CLEARML_AGENT__AGENT__VENVS_DIR/clearml.conf \
        "$@"
}
${CLEARML_POST_SETUP}
