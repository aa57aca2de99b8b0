#!/bin/bash
# Pyxis with #SBATCH container directives (ClearML's "Slurm with Pyxis" docs).
#SBATCH --job-name=clearml_task_${CLEARML_TASK.id}
#SBATCH --ntasks=1
#SBATCH --output=task-${CLEARML_TASK.id}-%j.log
#SBATCH --partition debug
#SBATCH --nodes=${CLEARML_TASK.hyperparams.properties.num_nodes.value:1}
#SBATCH --container-image=${CLEARML_TASK.container.image}
#SBATCH --container-remap-root
#SBATCH --container-writable
${CLEARML_PRE_SETUP}
export CLEARML_MULTI_NODE_SINGLE_TASK=1
${CLEARML_AGENT_EXECUTE}
${CLEARML_POST_SETUP}
