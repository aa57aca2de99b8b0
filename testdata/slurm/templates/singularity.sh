#!/bin/bash
# Singularity (ClearML's "Slurm with Singularity" docs): the agent runs
# inside `srun singularity exec`.
#SBATCH --job-name=clearml_task_${CLEARML_TASK.id}
#SBATCH --ntasks=1
#SBATCH --output=task-${CLEARML_TASK.id}-%j.log
#SBATCH --partition debug
#SBATCH --nodes=${CLEARML_TASK.hyperparams.properties.num_nodes.value:1}
${CLEARML_PRE_SETUP}
srun singularity exec --uts ${CLEARML_AGENT_EXECUTE}
${CLEARML_POST_SETUP}
