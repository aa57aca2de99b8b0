#!/bin/bash
# Bare-metal template in the shape of ClearML's "Slurm (Native)" docs: one
# venv per job. The job name must stay clearml_task_<task id>: the glue finds
# its jobs by it.
#SBATCH --job-name=clearml_task_${CLEARML_TASK.id}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --output=task-${CLEARML_TASK.id}-%j.log
#SBATCH --partition debug
#SBATCH --nodes=${CLEARML_TASK.hyperparams.properties.num_nodes.value:1}
${CLEARML_PRE_SETUP}
# Report resources once for all nodes of a multi-node task.
export CLEARML_MULTI_NODE_SINGLE_TASK=1
echo "task ${CLEARML_TASK.name} from queue ${CLEARML_QUEUE_NAME:unknown} on $(hostname) as $(whoami)"
${CLEARML_AGENT_EXECUTE}
${CLEARML_POST_SETUP}
